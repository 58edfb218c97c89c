"""The API's answers as Pydantic models: what each JSON route of /api/v1 returns, so that the
OpenAPI document (/api/v1/openapi.json) is a contract a client can be generated from.

The read models (conveyor.views, the engine's describe functions) build plain dicts; these
models only describe and check them at the edge. Every model forbids fields it does not
name, and its fields have no defaults unless the key is really left out sometimes (those
routes answer with ``response_model_exclude_unset``): a key a view adds or drops fails the
response instead of silently vanishing from the answer or the contract
(tests/server/test_openapi_contract.py drives the real routes through them).
"""
