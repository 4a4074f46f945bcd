"""The prompts. Small models need precise, grounded feedback: what exactly was wrong, and
what form is wanted; so the repair prompt quotes the verifiers' feedback verbatim."""

SYSTEM = (
    "You are a careful assistant. Answer exactly what is asked, in exactly the form that is "
    "asked for, with nothing extra."
)

DIAGNOSE = """A previous answer to the request below was checked and failed.

REQUEST:
{request}

ANSWER:
{answer}

CHECK RESULTS:
{feedback}

In one sentence each: what is the cause of the failure, and how should the answer be fixed?"""

REPAIR = """Your answer was checked and it is wrong.

Problems found:
{feedback}

Cause: {cause}
Fix: {fix}

Answer the original request again, correctly. Reply with only the corrected answer, in the \
requested form."""
