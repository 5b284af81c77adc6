"""The TLS-policy wing of delivery: what a receiving domain publishes
(MTA-STS, RFC 8461; DANE, RFC 7672), what applies to a connection, and
what TLS reports (RFC 8460) say about it.

- ``policy``: the TXT record and policy file grammars, MX matching (pure)
- ``discovery``: the ``_mta-sts`` TXT lookup
- ``fetch``: the HTTPS fetch of the policy file (the httpx seam)
- ``cache``: the worker's memory in front of the store's shared cache
- ``sts``: the policy source the engine asks, with its background refresh
- ``dane``: usable TLSA records and certificate matching (DANE, RFC 7672; pure)
- ``tlsa``: an MX host's TLSA lookup through the resolver seam
- ``applied``: configured level + published policy → the applied policy,
  then DANE per MX host (pure)
- ``results``: TLS reporting's policy and result types (RFC 8460), and what
  maps onto them (pure)
- ``counter``: a worker's TLS session counts until the next outcome batch
- ``report``: the ``_smtp._tls`` record and the report JSON (pure)
"""
