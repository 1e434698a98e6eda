#!/usr/bin/env bash
# Layering guard (called from .ci/run): the data plane builds without the policy engine,
# the database driver and the certificate generator, and the config crate depends on no
# domain crate. Reads `cargo tree` (normal dependencies only; dev-dependencies may use
# anything).
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
deps() { cargo tree --locked -p "$1" -e normal --prefix none --format '{p}' | sed 's/ (.*//' | sort -u; }

# portcullis-proxy: no regorus, sqlx (or its driver crates), rcgen.
bad=$(deps portcullis-proxy | grep -E '^(regorus|sqlx(-[a-z0-9-]+)?|rcgen) v' || true)
if [[ -n $bad ]]; then
    echo "check-layers: portcullis-proxy depends on:" >&2
    echo "$bad" | sed 's/^/  /' >&2
    for crate in $(echo "$bad" | cut -d' ' -f1); do
        echo "  via: $(cargo tree --locked -p portcullis-proxy -e normal -i "$crate" --prefix none \
            --format '{p}' 2>/dev/null | sed 's/ (.*//' | grep '^portcullis-' | sort -u | tr '\n' ' ')" >&2
    done
    fail=1
fi

# portcullis-config: no portcullis crate but portcullis-core.
bad=$(deps portcullis-config | grep -E '^portcullis-' | grep -vE '^portcullis-(config|core) v' || true)
if [[ -n $bad ]]; then
    echo "check-layers: portcullis-config depends on domain crates:" >&2
    echo "$bad" | sed 's/^/  /' >&2
    fail=1
fi

[[ $fail -eq 0 ]] || exit 1
echo "portcullis-proxy: no regorus, sqlx, rcgen; portcullis-config: portcullis-core only"
