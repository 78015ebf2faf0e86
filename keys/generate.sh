#!/usr/bin/env bash
# Regenerates sealgate's throwaway demo and test key material. FOR DEMOS AND TESTS ONLY:
# every private key here is public knowledge the moment it is committed.
#
#   keys/generate.sh [OUTDIR]        (default: keys/demo next to this script)
#
# Needs openssl (3.x) and gpg (2.2+). The layout (file names, addresses, validity windows,
# key usages) is fixed; the key material itself is new on every run. See keys/README.md.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/demo}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

PASS=demo-passphrase
printf '%s\n' "$PASS" > "$out/passphrase.txt"

# ---------------------------------------------------------------- X.509 / S/MIME
mkdir -p ca/newcerts
: > ca/index.txt
echo 1000 > ca/serial
cat > ca.cnf <<'EOF'
[ca]
default_ca = demo
[demo]
dir = ca
database = ca/index.txt
new_certs_dir = ca/newcerts
serial = ca/serial
default_md = sha256
policy = anything
unique_subject = no
email_in_dn = yes
copy_extensions = none
[anything]
commonName = optional
emailAddress = optional
organizationName = optional
EOF
cat > ext.cnf <<'EOF'
[rsa_enc]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = emailProtection
subjectAltName = email:${ENV::ADDR}
[ec_enc]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyAgreement
extendedKeyUsage = emailProtection
subjectAltName = email:${ENV::ADDR}
[sign_only_ku]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = emailProtection
subjectAltName = email:${ENV::ADDR}
[server_eku]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = email:${ENV::ADDR}
[no_san]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = emailProtection
[signer]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation,keyEncipherment
extendedKeyUsage = emailProtection
subjectAltName = email:${ENV::ADDR}
EOF

# make_ca NAME CN KEYALG
make_ca() {
  openssl req -x509 -new -newkey "$3" -nodes -keyout "$1.key" -out "$out/$1.pem" \
    -days 9000 -sha256 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
make_ca ca "sealgate demo CA" rsa:2048
make_ca other-ca "sealgate other CA" ec:<(openssl ecparam -name prime256v1)

# issue NAME ADDR KEY(rsa2048|rsa1024|p256) EXT START END [SUBJECT] [CA]
issue() {
  local name=$1 addr=$2 key=$3 ext=$4 start=$5 end=$6
  local subj=${7:-"/CN=$name"} ca=${8:-ca}
  case $key in
    rsa2048) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$name.key" 2>/dev/null ;;
    rsa1024) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "$name.key" 2>/dev/null ;;
    p256) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name.key" 2>/dev/null ;;
  esac
  openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
  ADDR="$addr" openssl ca -batch -config ca.cnf -cert "$out/$ca.pem" -keyfile "$ca.key" \
    -in "$name.csr" -out "$out/$name.pem" -extfile ext.cnf -extensions "$ext" \
    -startdate "$start" -enddate "$end" -notext 2>/dev/null
}

V0=20240101000000Z; V1=20451231000000Z
issue bob-rsa2048            bob@example.test    rsa2048 rsa_enc      $V0 $V1
issue carol-ec-p256          carol@example.test  p256    ec_enc       $V0 $V1
issue dave-expired           dave@example.test   rsa2048 rsa_enc      20200101000000Z 20210101000000Z
issue erin-not-yet-valid     erin@example.test   rsa2048 rsa_enc      20900101000000Z 20950101000000Z
issue frank-wrong-address    frank@other.test    rsa2048 rsa_enc      $V0 $V1 "/CN=frank/emailAddress=frank@example.test"
issue heidi-wrong-key-usage  heidi@example.test  rsa2048 sign_only_ku $V0 $V1
issue ivan-no-email-eku      ivan@example.test   rsa2048 server_eku   $V0 $V1
issue judy-rsa1024           judy@example.test   rsa1024 rsa_enc      $V0 $V1
issue kim-subject-email      kim@example.test    rsa2048 no_san       $V0 $V1 "/CN=kim/emailAddress=Kim@Example.TEST"
issue oscar-other-ca         oscar@example.test  p256    ec_enc       $V0 $V1 "/CN=oscar" other-ca
issue alice-smime            alice@example.test  rsa2048 signer       $V0 $V1

# Bundles: PEM bundle, PKCS#7 (.p7b, DER and PEM) and DER of single certificates.
cat "$out/bob-rsa2048.pem" "$out/carol-ec-p256.pem" > "$out/bundle.pem"
openssl crl2pkcs7 -nocrl -certfile "$out/bundle.pem" -outform DER -out "$out/bundle.p7b"
openssl crl2pkcs7 -nocrl -certfile "$out/bundle.pem" -out "$out/bundle-pem.p7b"
openssl x509 -in "$out/bob-rsa2048.pem" -outform DER -out "$out/bob-rsa2048.der"

# Sender S/MIME identity: PEM key + certificate, PKCS#12 in openssl's default (PBES2 AES-256,
# HMAC-SHA256) and legacy (PBE-SHA1-3DES, SHA-1 MAC: what gpgsm needs) encodings.
openssl pkey -in alice-smime.key -out "$out/alice-smime.key"
openssl pkcs12 -export -inkey alice-smime.key -in "$out/alice-smime.pem" -certfile "$out/ca.pem" \
  -name "alice demo" -passout "pass:$PASS" -out "$out/alice-smime.p12"
openssl pkcs12 -export -inkey alice-smime.key -in "$out/alice-smime.pem" -certfile "$out/ca.pem" \
  -name "alice demo" -passout "pass:$PASS" -out "$out/alice-smime-legacy.p12" \
  -certpbe PBE-SHA1-3DES -keypbe PBE-SHA1-3DES -macalg sha1

# ---------------------------------------------------------------- OpenPGP
export GNUPGHOME="$work/gnupg"
mkdir -m 700 "$GNUPGHOME"
G=(gpg --batch --quiet --no-tty --no-auto-check-trustdb --pinentry-mode loopback --passphrase '')
fpr_of() { gpg --batch --with-colons --list-keys "$1" | awk -F: '/^fpr/ {print $10; exit}'; }
export_pub() { gpg --batch --armor --export "$1" > "$out/$2"; }

# gen UID PRIMARY SUBKEY(or -) EXPIRE [extra gpg args...]
gen() {
  local uid=$1 prim=$2 sub=$3 exp=$4; shift 4
  "${G[@]}" "$@" --quick-gen-key "$uid" "$prim" cert,sign "$exp"
  local f; f=$(fpr_of "$uid")
  if [ "$sub" != - ]; then "${G[@]}" "$@" --quick-add-key "$f" "$sub" encr "$exp"; fi
  echo "$f"
}

f=$(gen "Peggy <peggy@example.test>" ed25519 cv25519 never);      export_pub "$f" peggy-ed25519.asc
gpg --batch --export "$f" > "$out/peggy-ed25519.gpg"
f=$(gen "Victor <victor@example.test>" rsa3072 rsa3072 never);     export_pub "$f" victor-rsa3072.asc
f=$(gen "Xavier <xavier@example.test>" ed25519 - never);           export_pub "$f" xavier-no-encryption-subkey.asc
f=$(gen "Walter <walter@example.test>" ed25519 cv25519 never)
export_pub "$f" walter-before-revocation.asc
sed 's/^:-----/-----/' "$GNUPGHOME/openpgp-revocs.d/$f.rev" > walter.rev
"${G[@]}" --import walter.rev
export_pub "$f" walter-revoked.asc

# Expired (made in 2020, valid one year), then renewed: same key, new self-signatures.
f=$(gen "Yvonne <yvonne@example.test>" ed25519 cv25519 1y --faked-system-time 20200101T000000)
export_pub "$f" yvonne-expired.asc
"${G[@]}" --quick-set-expire "$f" 20y
# gpg 2.2's '*' skips subkeys that have already expired: name the subkey.
sub=$(gpg --batch --with-colons --list-keys "$f" | awk -F: '/^fpr/ {n++; if (n == 2) {print $10; exit}}')
"${G[@]}" --quick-set-expire "$f" 20y "$sub"
export_pub "$f" yvonne-renewed.asc

# Sender OpenPGP identity: unprotected TSK, passphrase-protected TSK, public certificate.
f=$(gen "Alice <alice@example.test>" ed25519 cv25519 never)
export_pub "$f" alice-openpgp.asc
gpg --batch --armor --export-secret-keys "$f" > "$out/alice-openpgp-secret.asc"
# alice2: same shape, secret keys protected with the demo passphrase.
P=(gpg --batch --quiet --no-tty --pinentry-mode loopback --passphrase "$PASS")
"${P[@]}" --quick-gen-key "Alice2 <alice2@example.test>" ed25519 cert,sign never
f2=$(fpr_of "Alice2 <alice2@example.test>")
"${P[@]}" --quick-add-key "$f2" cv25519 encr never
"${P[@]}" --armor --export-secret-keys "$f2" > "$out/alice2-openpgp-secret-protected.asc"

ls "$out"
