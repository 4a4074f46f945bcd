"""The model server and its client: preparing the bundled model, the managed vLLM server,
connecting to it (or to an external one), and the client that chats and loads adapters."""
