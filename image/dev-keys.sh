#!/usr/bin/env bash
# The development RAUC PKI under image/build/keys/ (made once, reused): a CA whose certificate is
# the box's keyring (/etc/rauc/keyring.pem) and a signing key + certificate for bundles.
# For field boxes, use the organisation's own CA and an offline signing key instead:
#   RAUC_KEYRING=ca.pem RAUC_CERT=signer.pem RAUC_KEY=signer.key (or a PKCS#11 URI) make image
source "$(dirname "$0")/lib.sh"
KEYS=$BUILD_DIR/keys
mkdir -p "$KEYS"; chmod 700 "$KEYS"
if [ ! -s "$KEYS/ca.cert.pem" ]; then
    openssl req -x509 -newkey rsa:3072 -nodes -sha256 -days 3650 -keyout "$KEYS/ca.key.pem" -out "$KEYS/ca.cert.pem" \
        -subj "/O=E-signature Box development/CN=esignbox dev update CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    log "dev keys: new update CA $KEYS/ca.cert.pem"
fi
if [ ! -s "$KEYS/signer.cert.pem" ]; then
    openssl req -newkey rsa:3072 -nodes -sha256 -keyout "$KEYS/signer.key.pem" -out "$KEYS/signer.csr" \
        -subj "/O=E-signature Box development/CN=esignbox dev bundle signer" 2>/dev/null
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' > "$KEYS/signer.ext"
    openssl x509 -req -in "$KEYS/signer.csr" -CA "$KEYS/ca.cert.pem" -CAkey "$KEYS/ca.key.pem" -CAcreateserial \
        -days 1825 -sha256 -extfile "$KEYS/signer.ext" -out "$KEYS/signer.cert.pem" 2>/dev/null
    rm -f "$KEYS/signer.csr" "$KEYS/signer.ext"
    log "dev keys: new bundle signer $KEYS/signer.cert.pem"
fi
chmod 600 "$KEYS"/*.key.pem
echo "$KEYS"
