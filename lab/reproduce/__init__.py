"""Batch execution of the lab's notebooks: profiles (`experiments/<profile>.yaml`) run by papermill.

Modules: `profile` (the YAML schema, loading), `plan` (validating parameters against each
notebook's `parameters` cell before anything runs), `runner` (papermill execution grouped under
one MLflow parent run), `cli` (`lab reproduce`). Importing this package is cheap; papermill and
mlflow are imported when a profile runs.
"""
