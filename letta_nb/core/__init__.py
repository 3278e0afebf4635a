"""Pure core of letta_nb: chunk model, transcript reducer, cursors, throttle, approvals, errors.

Nothing in here imports IPython, ipywidgets or letta_client: this is the logic every front end
(widgets, magics, frames) only displays, and it is tested without a kernel or a server.
"""
