"""The L4 data path: TCP and UDP routing.

TCP: ``client_hello`` reads SNI and ALPN from a peeked ClientHello and
``proxy_protocol`` encodes and decodes PROXY headers (both sans-IO);
``relay`` moves the bytes once a connection is routed. UDP has its own
modules beside them.
"""
