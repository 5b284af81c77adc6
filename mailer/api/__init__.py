"""The survey platform's HTTP API (FastAPI): ``create_api`` in
:mod:`mailer.api.app`. Nothing is imported here, so that the engine side
can be used without loading the web stack."""
