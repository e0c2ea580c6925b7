"""Wire formats that several providers speak, each converted to and from OpenAI's here.

A codec holds the request, answer, stream and error conversion of one API family; the
provider modules that speak it keep their own hosts, auth and settings:
`anthropic_messages` (claude, vertex's Claude models), `google_genai` (gemini, vertex),
`bedrock_converse` (bedrock, APISIX's bedrock).
"""
