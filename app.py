"""The Hugging Face Space's entry (README front matter: `app_file: app.py`) and the repository's
`python app.py`. The app itself is `shufflers/app.py`, inside the installed package, where
`shufflelm app` finds it too; run as a script this file serves it, imported (`import app`) it
is that module, one object: `app.build_demo`, `app.generate`, a test's monkeypatch all reach
the code that runs."""

import sys

from shufflers import app

if __name__ == "__main__":
    raise SystemExit(app.main())
else:
    sys.modules[__name__] = app
