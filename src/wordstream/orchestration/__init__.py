"""The Airflow side: the streaming task's operator and the stream status app of the UI plugin.

DAG files (``dags/``) and the plugin file (``plugins/wordstream_ui_plugin.py``) import from here;
nothing else in the package imports Airflow.
"""
