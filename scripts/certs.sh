#!/usr/bin/env bash
# Creates the certificates microseg-collector and its agents use for mutual TLS: a CA, the
# collector's server certificate and one client certificate per agent host. See
# docs/collector.md, "Certificates".
set -euo pipefail

usage() {
  cat <<'EOF'
usage: certs.sh [--dir DIR] [--days N] COMMAND [ARGS]

commands:
  ca                       create DIR/ca.key and DIR/ca.crt, the CA that signs everything below
  collector NAME [SAN...]  create DIR/collector.key and DIR/collector.crt for the collector host
                           NAME; extra SANs are host names or IP addresses the agents dial
  agent HOST...            create DIR/agent-HOST.key and DIR/agent-HOST.crt for each agent
                           host, with CN and DNS SAN = HOST (the name its records carry)

options:
  --dir DIR   where the files go (default: current directory)
  --days N    validity of new certificates (default: 3650 for the CA, 825 otherwise)

Keys are ECDSA P-256, written with mode 0600. Existing files are never overwritten.
EOF
}

dir=.
days=
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --days) days="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "certs.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) break ;;
  esac
done
if [[ $# -lt 1 ]]; then
  usage >&2
  exit 2
fi
command="$1"
shift

# Host names and addresses go into openssl's -subj and extension text, where '/', ',' and '='
# have meaning; only the characters of DNS names and IP addresses are accepted.
check_name() {
  if [[ ! "$1" =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ && ! "$1" =~ ^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$ ]]; then
    echo "certs.sh: '$1' is not a host name or IP address" >&2
    exit 2
  fi
}

san_entry() {
  if [[ "$1" =~ ^[0-9.]+$ || "$1" == *:* ]]; then
    echo "IP:$1"
  else
    echo "DNS:$1"
  fi
}

refuse_existing() {
  for file in "$@"; do
    if [[ -e "$file" ]]; then
      echo "certs.sh: $file exists; remove it first to replace it" >&2
      exit 1
    fi
  done
}

new_key() {
  (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1")
}

# sign NAME KEY CERT EXTENSIONS: a certificate for KEY with CN=NAME, signed by the CA.
sign() {
  local name="$1" key="$2" cert="$3" extensions="$4"
  local csr
  csr="$(mktemp)"
  trap 'rm -f "$csr"' RETURN
  openssl req -new -key "$key" -subj "/CN=$name" -out "$csr"
  openssl x509 -req -in "$csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -CAserial "$dir/ca.srl" -days "${days:-825}" -sha256 -out "$cert" \
    -extfile <(printf '%s\n' "$extensions") 2>/dev/null
}

require_ca() {
  if [[ ! -f "$dir/ca.crt" || ! -f "$dir/ca.key" ]]; then
    echo "certs.sh: no CA in $dir; run 'certs.sh --dir $dir ca' first" >&2
    exit 1
  fi
}

mkdir -p "$dir"
case "$command" in
  ca)
    refuse_existing "$dir/ca.key" "$dir/ca.crt"
    new_key "$dir/ca.key"
    openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=microseg CA" -days "${days:-3650}" \
      -sha256 -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$dir/ca.crt"
    echo "$dir/ca.crt"
    ;;
  collector)
    [[ $# -ge 1 ]] || { usage >&2; exit 2; }
    require_ca
    refuse_existing "$dir/collector.key" "$dir/collector.crt"
    sans=()
    for name in "$@"; do
      check_name "$name"
      sans+=("$(san_entry "$name")")
    done
    new_key "$dir/collector.key"
    sign "$1" "$dir/collector.key" "$dir/collector.crt" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$(IFS=,; echo "${sans[*]}")"
    echo "$dir/collector.crt"
    ;;
  agent)
    [[ $# -ge 1 ]] || { usage >&2; exit 2; }
    require_ca
    for host in "$@"; do
      check_name "$host"
      refuse_existing "$dir/agent-$host.key" "$dir/agent-$host.crt"
    done
    for host in "$@"; do
      new_key "$dir/agent-$host.key"
      sign "$host" "$dir/agent-$host.key" "$dir/agent-$host.crt" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=DNS:$host"
      echo "$dir/agent-$host.crt"
    done
    ;;
  *)
    echo "certs.sh: unknown command $command" >&2
    usage >&2
    exit 2
    ;;
esac
