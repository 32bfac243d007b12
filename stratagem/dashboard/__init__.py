"""``stratagem dashboard RUN_DIR``: a local web page of a training run, live while it trains.

``data.py`` reads the run directory (and never writes into it: the trainer may be writing it from
another process, and a finished run is a record); ``frames.py`` draws recorded steps to PNG with
``viz.render``, the window's own drawing code; ``compare.py`` plays two programs on one seed in the
sandbox, recording into a temporary directory; ``app.py`` serves the JSON API and the page in
``static/`` (plain HTML, CSS and JavaScript: nothing built, nothing fetched from the network).
Only the CLI imports this package.
"""

DEFAULT_PORT = 8765  # not serve's 8000: a dashboard often runs beside an environment server
