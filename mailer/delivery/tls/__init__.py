"""The TLS-policy wing of delivery: what a receiving domain publishes
(MTA-STS, RFC 8461) and what applies to a connection.

- ``policy``: the TXT record and policy file grammars, MX matching (pure)
- ``discovery``: the ``_mta-sts`` TXT lookup
- ``fetch``: the HTTPS fetch of the policy file (the httpx seam)
- ``cache``: the worker's memory in front of the store's shared cache
- ``sts``: the policy source the engine asks, with its background refresh
- ``applied``: configured level + published policy → the applied policy (pure)
"""
