"""The edge: the process that holds every environment's stable port (decision 0014).

It is not the server. A `conveyor edge` process per data directory, in a session of its own,
listens on the stable ports of the process and container targets and forwards each new
connection to the release that serves; the server tells it where to send traffic through a
control socket. So a server that crashes, is stopped, frozen or upgraded leaves production
answering, and a server started right after a stop finds no port of its own still held.
"""
