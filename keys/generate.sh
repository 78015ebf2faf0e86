#!/usr/bin/env bash
# The one generator of sealgate's throwaway key material: keys/demo/ and the PKI of every test
# (Rust, Python) and benchmark. FOR DEMOS AND TESTS ONLY: every private key it writes is public
# knowledge the moment it is committed or shared.
#
#   keys/generate.sh [OUTDIR]                    profile demo (default OUTDIR: keys/demo)
#   keys/generate.sh --profile NAME OUTDIR       NAME: demo | smime | tls
#
#   demo   X.509 and OpenPGP keys for .test addresses, fixed validity windows (keys/demo/,
#          `sealgate demo`, the keys_* tests)
#   smime  the S/MIME interop PKI for example.org, valid from now for ten years, with PKCS#12
#          files gpgsm imports (smime_interop, corpus_fidelity, benches/smime, the e2e policy tests)
#   tls    TLS server certificates for localhost: good, expired, wrong host, self-signed, and an
#          unrelated CA (the e2e tests' listeners and scripted upstream)
#
# Needs openssl (3.x); the demo profile also gpg (2.2+); gpgsm, when installed, checks each
# legacy PKCS#12 file. The layout of each profile (file names, addresses, validity windows, key
# usages) is fixed; the keys are new on every run. Every file is listed in keys/README.md.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
profile=demo
if [ "${1:-}" = --profile ]; then
  profile=${2:?"usage: generate.sh --profile demo|smime|tls OUTDIR"}
  shift 2
  [ $# -ge 1 ] || { echo "generate.sh: --profile $profile needs OUTDIR" >&2; exit 2; }
fi
case $profile in demo | smime | tls) ;; *) echo "generate.sh: unknown profile $profile" >&2; exit 2 ;; esac
out="${1:-$here/demo}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
# The OpenPGP profile's gpg-agent lives in $work/gnupg: stopped before its home goes, so no
# agent outlives the script (a test run calls it many times).
trap '[ -d "$work/gnupg" ] && gpgconf --homedir "$work/gnupg" --kill all >/dev/null 2>&1; rm -rf "$work"' EXIT
cd "$work"
# Where private keys go: the demo profile writes only the sender's key (below), the test
# profiles every key.
keys=$out
[ "$profile" = demo ] && keys=$work

# ---------------------------------------------------------------- shared X.509 machinery
mkdir -p ca/newcerts
: > ca/index.txt
cat > ca.cnf <<'EOF'
[ca]
default_ca = test
[test]
dir = ca
database = ca/index.txt
new_certs_dir = ca/newcerts
default_md = sha256
rand_serial = yes
policy = anything
unique_subject = no
email_in_dn = yes
copy_extensions = none
[anything]
commonName = optional
emailAddress = optional
organizationName = optional
EOF

# key NAME ALG: a new private key (PKCS#8 PEM) $keys/NAME.key. ALG: rsa2048 | rsa1024 | p256.
key() {
  case $2 in
    rsa2048 | rsa1024)
      openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:${2#rsa}" -out "$keys/$1.key" 2>/dev/null ;;
    p256) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$keys/$1.key" 2>/dev/null ;;
    *) echo "generate.sh: unknown key type $2" >&2; return 1 ;;
  esac
}

# make_ca NAME ALG DAYS SUBJECT: a self-signed root CA, $out/NAME.pem (key $keys/NAME.key).
make_ca() {
  key "$1" "$2"
  openssl req -x509 -new -key "$keys/$1.key" -out "$out/$1.pem" -days "$3" -sha256 -subj "$4" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# issue NAME ALG EXT VALIDITY SUBJECT [CA]: a new key and a certificate $out/NAME.pem issued by
# CA (default ca) with the extensions of section EXT of ext.cnf (the profile writes it; ADDR in
# the environment fills ${ENV::ADDR}). VALIDITY: DAYS from now, or START:END (YYYYMMDDHHMMSSZ).
issue() {
  local name=$1 ext=$3 validity=$4 subj=$5 ca=${6:-ca}
  local dates=(-days "$validity")
  case $validity in *:*) dates=(-startdate "${validity%%:*}" -enddate "${validity#*:}") ;; esac
  key "$name" "$2"
  openssl req -new -key "$keys/$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
  ADDR=${ADDR:-} openssl ca -batch -config ca.cnf -cert "$out/$ca.pem" -keyfile "$keys/$ca.key" \
    -in "$name.csr" -out "$out/$name.pem" -extfile ext.cnf -extensions "$ext" \
    "${dates[@]}" -preserveDN -notext 2>/dev/null
}

# gpgsm_imports FILE PASSWORD: whether gpgsm takes the PKCS#12 file (yes when gpgsm is absent),
# in a scratch home whose agent is stopped afterwards.
gpgsm_imports() {
  command -v gpgsm >/dev/null || return 0
  local h ok=0
  h=$(mktemp -d)
  echo allow-loopback-pinentry > "$h/gpg-agent.conf"
  printf '%s\n' "$2" | gpgsm --homedir "$h" --batch --no-tty --pinentry-mode loopback \
    --passphrase-fd 0 --import "$1" >/dev/null 2>&1 || ok=1
  gpgconf --homedir "$h" --kill all >/dev/null 2>&1 || true
  rm -rf "$h"
  return $ok
}

# p12 NAME PASSWORD FILE default|legacy [openssl args...]: NAME's key, certificate and the CA as
# PKCS#12 in $out/FILE, in openssl's default encoding (PBES2 AES-256, HMAC-SHA256) or the legacy
# one gpgsm 2.2 needs (PBE-SHA1-3DES, SHA-1 MAC). gpgsm 2.2 fails to import about one freshly
# exported legacy file in 40-60 ("error parsing or decrypting the PKCS#12 file": it depends on the
# random salt and IV); a fixture a peer tool sometimes rejects makes tests fail at random, so a
# legacy file is exported again until gpgsm imports it.
p12() {
  local name=$1 pass=$2 file=$3 mode=$4 tries=0
  shift 4
  local legacy=()
  [ "$mode" = legacy ] && legacy=(-certpbe PBE-SHA1-3DES -keypbe PBE-SHA1-3DES -macalg sha1)
  while :; do
    openssl pkcs12 -export -inkey "$keys/$name.key" -in "$out/$name.pem" -certfile "$out/ca.pem" \
      -passout "pass:$pass" -out "$out/$file" "${legacy[@]}" "$@"
    [ "$mode" != legacy ] && return 0
    gpgsm_imports "$out/$file" "$pass" && return 0
    tries=$((tries + 1))
    if [ "$tries" -ge 10 ]; then
      echo "generate.sh: gpgsm refused 10 exports of $file in a row" >&2
      return 1
    fi
    echo "generate.sh: gpgsm could not import $file (known gpgsm 2.2 flaw), exporting again" >&2
  done
}

# ---------------------------------------------------------------- profile demo: X.509 / S/MIME
demo_x509() {
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
  make_ca ca rsa2048 9000 "/CN=sealgate demo CA"
  make_ca other-ca p256 9000 "/CN=sealgate other CA"

  local V=20240101000000Z:20451231000000Z
  local PAST=20200101000000Z:20210101000000Z FUTURE=20900101000000Z:20950101000000Z
  ADDR=bob@example.test   issue bob-rsa2048           rsa2048 rsa_enc      $V "/CN=bob-rsa2048"
  ADDR=carol@example.test issue carol-ec-p256         p256    ec_enc       $V "/CN=carol-ec-p256"
  ADDR=dave@example.test  issue dave-expired          rsa2048 rsa_enc      $PAST "/CN=dave-expired"
  ADDR=erin@example.test  issue erin-not-yet-valid    rsa2048 rsa_enc      $FUTURE "/CN=erin-not-yet-valid"
  ADDR=frank@other.test   issue frank-wrong-address   rsa2048 rsa_enc      $V "/CN=frank/emailAddress=frank@example.test"
  ADDR=heidi@example.test issue heidi-wrong-key-usage rsa2048 sign_only_ku $V "/CN=heidi-wrong-key-usage"
  ADDR=ivan@example.test  issue ivan-no-email-eku     rsa2048 server_eku   $V "/CN=ivan-no-email-eku"
  ADDR=judy@example.test  issue judy-rsa1024          rsa1024 rsa_enc      $V "/CN=judy-rsa1024"
  ADDR=kim@example.test   issue kim-subject-email     rsa2048 no_san       $V "/CN=kim/emailAddress=Kim@Example.TEST"
  ADDR=oscar@example.test issue oscar-other-ca        p256    ec_enc       $V "/CN=oscar" other-ca
  ADDR=alice@example.test issue alice-smime           rsa2048 signer       $V "/CN=alice-smime"

  # Bundles: PEM bundle, PKCS#7 (.p7b, DER and PEM) and DER of single certificates.
  cat "$out/bob-rsa2048.pem" "$out/carol-ec-p256.pem" > "$out/bundle.pem"
  openssl crl2pkcs7 -nocrl -certfile "$out/bundle.pem" -outform DER -out "$out/bundle.p7b"
  openssl crl2pkcs7 -nocrl -certfile "$out/bundle.pem" -out "$out/bundle-pem.p7b"
  openssl x509 -in "$out/bob-rsa2048.pem" -outform DER -out "$out/bob-rsa2048.der"

  # Sender S/MIME identity: PEM key + certificate, PKCS#12 in both encodings.
  openssl pkey -in "$keys/alice-smime.key" -out "$out/alice-smime.key"
  p12 alice-smime "$PASS" alice-smime.p12 default -name "alice demo"
  p12 alice-smime "$PASS" alice-smime-legacy.p12 legacy -name "alice demo"
}

# ---------------------------------------------------------------- profile demo: OpenPGP
demo_openpgp() {
  export GNUPGHOME="$work/gnupg"
  mkdir -m 700 "$GNUPGHOME"
  G=(gpg --batch --quiet --no-tty --no-auto-check-trustdb --pinentry-mode loopback --passphrase '')
  local f f2 sub
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
  local P=(gpg --batch --quiet --no-tty --pinentry-mode loopback --passphrase "$PASS")
  "${P[@]}" --quick-gen-key "Alice2 <alice2@example.test>" ed25519 cert,sign never
  f2=$(fpr_of "Alice2 <alice2@example.test>")
  "${P[@]}" --quick-add-key "$f2" cv25519 encr never
  "${P[@]}" --armor --export-secret-keys "$f2" > "$out/alice2-openpgp-secret-protected.asc"
}
fpr_of() { gpg --batch --with-colons --list-keys "$1" | awk -F: '/^fpr/ {print $10; exit}'; }
export_pub() { gpg --batch --armor --export "$1" > "$out/$2"; }

# gen UID PRIMARY SUBKEY(or -) EXPIRE [extra gpg args...]: prints the new key's fingerprint.
gen() {
  local uid=$1 prim=$2 sub=$3 exp=$4; shift 4
  "${G[@]}" "$@" --quick-gen-key "$uid" "$prim" cert,sign "$exp"
  local f; f=$(fpr_of "$uid")
  if [ "$sub" != - ]; then "${G[@]}" "$@" --quick-add-key "$f" "$sub" encr "$exp"; fi
  echo "$f"
}

# ---------------------------------------------------------------- profile smime
smime() {
  cat > ext.cnf <<'EOF'
[signer]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.org
[ecsigner]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation
extendedKeyUsage = emailProtection
subjectAltName = email:erin@example.org
[rsa]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = emailProtection
[ec]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyAgreement
extendedKeyUsage = emailProtection
[serveronly]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
EOF
  local O="/O=sealgate test"
  make_ca ca rsa2048 3650 "$O/CN=sealgate test root"
  issue signer      rsa2048 signer     3650 "$O/CN=Alice/emailAddress=alice@example.org"
  issue ec-signer   p256    ecsigner   3650 "$O/CN=Erin/emailAddress=erin@example.org"
  issue rsa1        rsa2048 rsa        3650 "$O/CN=Bob/emailAddress=bob@example.org"
  issue rsa2        rsa2048 rsa        3650 "$O/CN=Carol/emailAddress=carol@example.org"
  issue ec1         p256    ec         3650 "$O/CN=Dave/emailAddress=dave@example.org"
  issue rsa1024     rsa1024 rsa        3650 "$O/CN=Weak/emailAddress=weak@example.org"
  issue server-only rsa2048 serveronly 3650 "$O/CN=server.example.org"
  p12 rsa1 test rsa1.p12 legacy
  p12 signer test signer.p12 legacy
}

# ---------------------------------------------------------------- profile tls
tls() {
  cat > ext.cnf <<'EOF'
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
[wrong_host]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:wrong.example
EOF
  make_ca ca rsa2048 3650 "/CN=Sealgate Test CA"
  make_ca other_ca rsa2048 3650 "/CN=Unrelated Test CA"
  issue server     rsa2048 server     825 "/CN=localhost"
  issue expired    rsa2048 server     20200101000000Z:20210101000000Z "/CN=localhost"
  issue wrong_host rsa2048 wrong_host 825 "/CN=wrong.example"
  # Self-signed, for localhost, not under the test CA.
  key self_signed rsa2048
  openssl req -x509 -new -key "$keys/self_signed.key" -sha256 -days 825 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -addext "basicConstraints=critical,CA:FALSE" \
    -addext "extendedKeyUsage=serverAuth" -out "$out/self_signed.pem" 2>/dev/null
  # The chain (leaf + CA) for servers that present it.
  cat "$out/server.pem" "$out/ca.pem" > "$out/server_chain.pem"
  # Readable by other test processes (Postfix): throwaway keys.
  chmod 644 "$keys"/*.key
  chmod 755 "$out"
}

case $profile in
  demo)
    PASS=demo-passphrase
    printf '%s\n' "$PASS" > "$out/passphrase.txt"
    demo_x509
    demo_openpgp
    ;;
  smime) smime ;;
  tls) tls ;;
esac
ls "$out"
