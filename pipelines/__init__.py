"""Entry points and their logic: the only package where Ray, DeepSpeed, MLflow, boto3 and pyarrow meet.

Each ``pipelines/<name>.py`` is a thin ``main(argv) -> int``; the logic lives in the other modules.
"""
