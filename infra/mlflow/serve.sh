#!/usr/bin/env bash
# The production MLflow tracking server: the one place where the environment becomes `mlflow server`.
# The image (Dockerfile) runs it as its entrypoint, compose.yaml and ../k8s/mlflow.yaml only set the
# environment, and tests/infra/test_mlflow_server.py runs this same file against a real PostgreSQL and
# S3 API, so the tested configuration is the deployed one.
#
# Required (* = secret: inject it from a secret store, never bake it into an image or a manifest):
#   MLFLOW_BACKEND_STORE_URI *        postgresql://USER:PASSWORD@HOST:5432/mlflow       runs, models, aliases
#   MLFLOW_AUTH_DATABASE_URI *        postgresql://USER:PASSWORD@HOST:5432/mlflow_auth  users, permissions
#   MLFLOW_AUTH_ADMIN_PASSWORD *      creates the admin user on the first start (12+ characters); MLflow
#                                     ignores it once that user exists (rotate through the users API)
#   MLFLOW_FLASK_SERVER_SECRET_KEY *  signs the UI's CSRF tokens; the same value on every replica
#   MLFLOW_ARTIFACTS_DESTINATION      s3://BUCKET/PREFIX, where the server stores artifacts
# Optional:
#   MLFLOW_AUTH_ADMIN_USERNAME (admin), MLFLOW_HOST (0.0.0.0), MLFLOW_PORT (5000), MLFLOW_WORKERS (2)
#   MLFLOW_AUTH_CACHE_TTL_SECONDS (60)  how long a worker trusts a verified password; see below
#   MLFLOW_SERVER_ALLOWED_HOSTS   the Host headers clients send, e.g. mlflow.example.com,mlflow:* (MLflow's
#                                 default admits only localhost and private IP addresses)
#   S3 access: the standard AWS credential chain (IRSA web identity on EKS, AWS_ACCESS_KEY_ID/...);
#   MLFLOW_S3_ENDPOINT_URL or AWS_ENDPOINT_URL for an S3-compatible store.
#
# Artifacts are proxied (--serve-artifacts): clients get mlflow-artifacts:/ URIs and upload and download
# through this server, so only the server holds S3 credentials. Password-bearing URIs stay in the
# environment (mlflow reads MLFLOW_BACKEND_STORE_URI itself) or in a mode-600 file, never on a command
# line that `ps` shows.
set -euo pipefail

fail() {  # one line on stderr: what `docker logs` and `kubectl logs` show first
    echo "serve.sh: $*" >&2
    exit 2
}

require() {
    [[ -n "${!1:-}" ]] || fail "$1 is not set: $2 (see infra/mlflow/serve.sh)"
}

require MLFLOW_BACKEND_STORE_URI "the PostgreSQL URI of the tracking database"
require MLFLOW_AUTH_DATABASE_URI "the PostgreSQL URI of the authentication database"
require MLFLOW_AUTH_ADMIN_PASSWORD "the password of the admin user created on the first start"
require MLFLOW_FLASK_SERVER_SECRET_KEY "the key that signs CSRF tokens, the same on every replica"
require MLFLOW_ARTIFACTS_DESTINATION "the s3:// location of the artifact store"

# Values are checked without echoing them: the URIs carry passwords.
for name in MLFLOW_BACKEND_STORE_URI MLFLOW_AUTH_DATABASE_URI; do
    # postgresql:// is SQLAlchemy 2.1's psycopg (3) dialect, the driver the image installs.
    [[ ${!name} == postgresql://* || ${!name} == postgresql+psycopg://* ]] ||
        fail "$name must be a postgresql:// URI (PostgreSQL is the production backend)"
    [[ ${!name} != *$'\n'* ]] || fail "$name must be one line"
done
[[ $MLFLOW_ARTIFACTS_DESTINATION == s3://?* ]] ||
    fail "MLFLOW_ARTIFACTS_DESTINATION must be an s3:// URI, not '$MLFLOW_ARTIFACTS_DESTINATION'"
((${#MLFLOW_AUTH_ADMIN_PASSWORD} >= 12)) ||
    fail "MLFLOW_AUTH_ADMIN_PASSWORD must have at least 12 characters (MLflow's password policy)"

host=${MLFLOW_HOST:-0.0.0.0}
port=${MLFLOW_PORT:-5000}
workers=${MLFLOW_WORKERS:-2}
cache_ttl=${MLFLOW_AUTH_CACHE_TTL_SECONDS:-60}
# Kubernetes service links set MLFLOW_PORT=tcp://IP:PORT in pods beside a Service named mlflow.
[[ $port =~ ^[0-9]+$ ]] ||
    fail "MLFLOW_PORT must be a port number, not '$port' (on Kubernetes: enableServiceLinks: false)"
[[ $workers =~ ^[1-9][0-9]*$ ]] || fail "MLFLOW_WORKERS must be a positive number, not '$workers'"
[[ $cache_ttl =~ ^[0-9]+$ ]] || fail "MLFLOW_AUTH_CACHE_TTL_SECONDS must be a number of seconds, not '$cache_ttl'"

# The basic-auth app takes its database from a config file only. default_permission = READ: every
# signed-in user can read every experiment and model (restore.py and evaluate.py load the champion under
# any account), while only a resource's creator, an admin or an explicit grant may change it, so moving
# the champion alias stays with the promotion account. Anonymous requests get 401 whatever this says.
# auth_cache_ttl_seconds: MLflow checks the password (a scrypt hash, ~0.2 s of CPU) up to three times per
# request without the cache, which caps a worker at a few requests per second; with it, once per user
# and worker per TTL. The price: a changed or deleted password stays valid on the other workers and
# replicas for up to the TTL (0 turns the cache off).
# The % doubling is configparser's escape: URL-encoded passwords contain %.
umask 077
auth_dir=$(mktemp -d "${TMPDIR:-/tmp}/mlflow-auth.XXXXXX")
export MLFLOW_AUTH_CONFIG_PATH=$auth_dir/basic_auth.ini
cat >"$MLFLOW_AUTH_CONFIG_PATH" <<EOF
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DATABASE_URI//%/%%}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = $cache_ttl
EOF
export MLFLOW_AUTH_ADMIN_USERNAME=${MLFLOW_AUTH_ADMIN_USERNAME:-admin}

# Manifests pass options they do not use as empty strings; to boto3 and mlflow, empty is not unset.
for name in MLFLOW_S3_ENDPOINT_URL AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN \
    AWS_PROFILE AWS_REGION AWS_DEFAULT_REGION MLFLOW_SERVER_ALLOWED_HOSTS; do
    [[ -n ${!name:-} ]] || unset "$name"
done

export MLFLOW_DISABLE_TELEMETRY=${MLFLOW_DISABLE_TELEMETRY:-true}
# The server-side job runner serves GenAI features (scorers, trace rollups) this project does not use; on
# a database backend it is on by default and starts 7 consumer processes (~0.8 GB) beside the workers.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
# mlflow reads these from the environment too; neither may weaken what the flags below set up.
unset MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE MLFLOW_ARTIFACTS_ONLY

args=(
    --app-name basic-auth
    --serve-artifacts
    --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION"
    --default-artifact-root mlflow-artifacts:/
    --host "$host" --port "$port" --workers "$workers"
)
if [[ -n ${MLFLOW_SERVER_ALLOWED_HOSTS:-} ]]; then
    args+=(--allowed-hosts "$MLFLOW_SERVER_ALLOWED_HOSTS")
fi
echo "serve.sh: mlflow server on $host:$port, $workers workers, artifacts in $MLFLOW_ARTIFACTS_DESTINATION" >&2
exec mlflow server "${args[@]}"
