#!/usr/bin/env bash
# Local emulators of cloud object stores, to try and test a lake on S3 or Azure without a
# cloud account: Moto's S3 server (PyPI) and Microsoft's Azurite (npm). weir does not need
# them to run; real deployments point --lake at their own bucket or container.
#
#   infra/store-emulators.sh install   install both into ~/.cache/weir/emulators if missing
#   infra/store-emulators.sh env       print the variables the tests read (WEIR_S3_EMULATOR, ...)
set -euo pipefail

MOTO_VERSION=5.2.5
AZURITE_VERSION=3.35.0
DIR=${WEIR_EMULATORS_DIR:-$HOME/.cache/weir/emulators}
MOTO=$DIR/venv/bin/moto_server
AZURITE=$DIR/node/node_modules/.bin/azurite-blob
log() { echo "store-emulators: $*" >&2; }

install() {
  if ! [ -x "$MOTO" ]; then
    log "installing Moto's S3 server from PyPI"
    python3 -m venv "$DIR/venv"
    "$DIR/venv/bin/pip" install -q "moto[server]==$MOTO_VERSION"
  fi
  if ! [ -x "$AZURITE" ]; then
    log "installing Azurite from npm"
    mkdir -p "$DIR/node"
    npm install --prefix "$DIR/node" --no-audit --no-fund --loglevel=error \
      "azurite@$AZURITE_VERSION" >/dev/null
  fi
}

case "${1:-}" in
  install) install ;;
  env)
    echo "WEIR_S3_EMULATOR=$MOTO"
    echo "WEIR_AZURE_EMULATOR=$AZURITE"
    ;;
  *) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
