"""The application: the `Agent` (one request through the reflection graph, recorded), its
correction memory, eval runs, and the thread checkpointer. Above `trainers`, below the edges."""
