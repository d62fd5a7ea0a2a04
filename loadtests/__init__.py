"""Locust load tests of the served `rank` ensemble (``locustfile.py``) and a bounded headless runner (``runner.py``).

Reached as ``hybridrec.loadtests`` through the link ``hybridrec/loadtests -> ../loadtests``; run it with
``hybridrec loadtest -- --host 127.0.0.1:8001 --users 4 --run-time 30``.
"""
