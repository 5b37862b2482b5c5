"""Registers ONNX files as versions of an MLflow registered model, the way a training pipeline would
(mlflow.onnx.log_model inside a run), and reads the registry back with MLflow's own client.

The gateway's MLflow tests (gateway/tests/mlflow.rs) drive a real tracking server through this
script, so that what the Rust client sees was written by MLflow itself, not by a hand-made fixture.
Every command prints one JSON document on stdout; MLFLOW_TRACKING_URI names the server.

  register.py register NAME FILE [FILE ...] [--alias ALIAS=VERSION ...] [--external-data]
  register.py legacy NAME FILE                  # versions whose sources predate logged models
  register.py alias NAME ALIAS VERSION          # set (or move) an alias
  register.py show NAME (--alias ALIAS | --version VERSION)

Run it with the venv that scripts/mlflow/setup.sh made.
"""

import argparse
import contextlib
import json
import sys

import mlflow
import onnx
from mlflow import MlflowClient


def version_json(mv):
    return {
        "name": mv.name,
        "version": mv.version,
        "source": mv.source,
        "run_id": mv.run_id,
        "model_id": getattr(mv, "model_id", None),
        "aliases": sorted(mv.aliases),
        "tags": dict(mv.tags),
    }


def register(args):
    client = MlflowClient()
    versions = []
    for path in args.files:
        model = onnx.load(path)
        with mlflow.start_run():
            # save_as_external_data defaults to True in mlflow.onnx, which moves every tensor over
            # 1 KiB into a sidecar file; the gateway serves one self-contained file, so the tests
            # log models as a self-contained file unless they test that case on purpose.
            info = mlflow.onnx.log_model(
                model,
                name="model",
                registered_model_name=args.name,
                save_as_external_data=args.external_data,
            )
        mv = client.get_model_version(args.name, str(info.registered_model_version))
        versions.append(version_json(mv))
    for pair in args.alias:
        alias, _, version = pair.partition("=")
        client.set_registered_model_alias(args.name, alias, version)
    return {"versions": versions}


def legacy(args):
    """Versions with the sources older clients wrote: `runs:/<run>/<path>` and an artifact URI
    (`mlflow-artifacts:/...`) naming plain run artifacts, and `runs:/<run>/model` naming what
    MLflow 3 stores as a logged model of that run, not as run artifacts."""
    client = MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_artifact(args.file, artifact_path="legacy")
        mlflow.onnx.log_model(onnx.load(args.file), name="model", save_as_external_data=False)
    run_id = run.info.run_id
    client.create_registered_model(args.name)
    sources = [f"runs:/{run_id}/legacy", f"{run.info.artifact_uri}/legacy", f"runs:/{run_id}/model"]
    created = [client.create_model_version(args.name, source, run_id) for source in sources]
    return {"versions": [version_json(client.get_model_version(args.name, mv.version)) for mv in created]}


def set_alias(args):
    MlflowClient().set_registered_model_alias(args.name, args.alias, args.version)
    return version_json(MlflowClient().get_model_version_by_alias(args.name, args.alias))


def show(args):
    client = MlflowClient()
    if args.alias is not None:
        return version_json(client.get_model_version_by_alias(args.name, args.alias))
    return version_json(client.get_model_version(args.name, args.version))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("register", help="log each file as a new version")
    p.add_argument("name")
    p.add_argument("files", nargs="+")
    p.add_argument("--alias", action="append", default=[], metavar="ALIAS=VERSION")
    p.add_argument("--external-data", action="store_true", help="mlflow.onnx's default layout")
    p.set_defaults(run=register)

    p = commands.add_parser("legacy", help="versions with runs:/ and mlflow-artifacts:/ sources")
    p.add_argument("name")
    p.add_argument("file")
    p.set_defaults(run=legacy)

    p = commands.add_parser("alias", help="set or move an alias")
    p.add_argument("name")
    p.add_argument("alias")
    p.add_argument("version")
    p.set_defaults(run=set_alias)

    p = commands.add_parser("show", help="one version, by alias or number")
    p.add_argument("name")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--alias")
    which.add_argument("--version")
    p.set_defaults(run=show)

    args = parser.parse_args()
    # MLflow prints run links on stdout; keep stdout for the one JSON document the tests parse.
    with contextlib.redirect_stdout(sys.stderr):
        result = args.run(args)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
