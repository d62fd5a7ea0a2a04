"""Locust load tests of the served `rank` ensemble (``locustfile.py``) and a bounded headless runner (``runner.py``).

Installed as ``hybridrec.loadtests`` (pyproject.toml maps this folder into the package); run it with
``hybridrec loadtest -- --url 127.0.0.1:8001 --users 4 --run-time 30``.
"""
