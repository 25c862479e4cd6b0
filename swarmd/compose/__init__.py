"""The composition root: the only package that knows every part of swarmd.

* :mod:`swarmd.compose.worker`: ``WORKFLOWS`` (every workflow version by name),
  the ``Registrar`` plugins get, and the workflow worker with every activity.
* :mod:`swarmd.compose.services`: the API's typed ``Services`` (clients built
  once per process), entered by the API's lifespan.

Everything below it (engine, workflows, activities, agents, api) gets its
clients handed in and never reaches up here; see docs/architecture.md.
"""
