"""`uncover serve`: a local web explorer of a model's internals (FastAPI server + static page).

``session.Explorer`` computes each view through uncover's public functions; ``server`` serves it behind
``security.Guard`` (per-launch token, Host check, size limits); ``circuits`` defines the circuit graph
file the circuit view opens. The page (``static/``) is plain JS and SVG plus the plotly.js shipped inside
the ``plotly`` package, so it works offline.
"""
