#!/usr/bin/env bash
# An enterprise-style PKI for eastwall with openssl alone: a root and an issuing CA that
# carry no SPIFFE URI, and workload certificates that do (docs/IDENTITY.md, "Your own PKI").
#   scripts/openssl-pki.sh DIR init                 DIR/root.pem (the trust bundle), root.key,
#                                                   issuing.pem, issuing.key
#   scripts/openssl-pki.sh DIR leaf NAME SAN [DAYS] DIR/NAME.crt (leaf, then the issuing CA)
#                                                   and NAME.key; SAN e.g.
#                                                   URI:spiffe://corp.example/wl/NAME
# The tests use it to mint the certificates eastwall must accept (and refuse).
set -euo pipefail
dir=$1; what=$2
mkdir -p "$dir"
cd "$dir"
newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -noenc)
case "$what" in
init)
  openssl req -x509 "${newkey[@]}" -keyout root.key -out root.pem -days 3650 \
    -subj "/O=Corp/CN=Corp Root CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -new "${newkey[@]}" -keyout issuing.key -out issuing.csr \
    -subj "/O=Corp/CN=Corp Issuing CA" 2>/dev/null
  printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' > issuing.ext
  openssl x509 -req -in issuing.csr -CA root.pem -CAkey root.key -CAcreateserial \
    -days 3650 -extfile issuing.ext -out issuing.pem 2>/dev/null
  ;;
leaf)
  name=$3; san=$4; days=${5:-2}
  openssl req -new "${newkey[@]}" -keyout "$name.key" -out "$name.csr" \
    -subj "/O=Corp/CN=$name" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' \
    "$san" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA issuing.pem -CAkey issuing.key -CAcreateserial \
    -days "$days" -extfile "$name.ext" -out "$name.leaf.pem" 2>/dev/null
  cat "$name.leaf.pem" issuing.pem > "$name.crt"
  ;;
*)
  echo "usage: $0 DIR init | DIR leaf NAME SAN [DAYS]" >&2
  exit 2
  ;;
esac
