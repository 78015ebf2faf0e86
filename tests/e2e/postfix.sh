#!/bin/sh
# Private, throwaway Postfix instance for sealgate's end-to-end tests.
#
#   postfix.sh start DIR PORT CERT KEY [MAIN [MASTER]]
#                                        configure + start; listens on 127.0.0.1:PORT only,
#                                        STARTTLS offered (smtpd_tls_security_level=may) with
#                                        CERT/KEY; every recipient in e2e.test and any other
#                                        domain is delivered to the Maildir DIR/mail/inbox/.
#                                        MAIN: a file of main.cf settings applied on top
#                                        (postconf -e, one "name = value" a line; # comments);
#                                        MASTER: master.cf service lines that replace the
#                                        default smtpd line (they must listen on PORT).
#   postfix.sh stop DIR                  stop it (and wait for the master to exit)
#   postfix.sh log DIR                   print its log
#
# Nothing depends on the host's /etc/postfix/main.cf: the instance has its own
# config_directory, queue_directory and data_directory under DIR.  Must run as root
# (Postfix's master needs it); the host's own Postfix may or may not be running.
set -eu

cmd=${1:?usage: postfix.sh start|stop|log DIR ...}
dir=${2:?DIR missing}

case "$cmd" in
start)
    port=${3:?PORT missing}; cert=${4:?CERT missing}; key=${5:?KEY missing}
    [ "$(id -u)" = 0 ] || { echo "postfix.sh: must run as root" >&2; exit 2; }
    command -v postfix >/dev/null || { echo "postfix.sh: postfix not installed" >&2; exit 2; }
    daemon_directory=$(postconf -dh daemon_directory)
    meta_directory=$(postconf -dh meta_directory)
    shlib_directory=$(postconf -dh shlib_directory)
    mkdir -p "$dir/etc" "$dir/spool" "$dir/data" "$dir/mail"
    # Postfix processes (user postfix / nobody) must be able to traverse the path
    chmod 755 "$dir" "$dir/etc" "$dir/mail"
    chown root:root "$dir/spool"; chmod 755 "$dir/spool"
    chown postfix:postfix "$dir/data"; chmod 700 "$dir/data"
    chown nobody:nogroup "$dir/mail"
    # private copies of cert/key (readable by root; smtpd loads them before dropping privileges)
    cp "$cert" "$dir/etc/cert.pem"; cp "$key" "$dir/etc/key.pem"; chmod 600 "$dir/etc/key.pem"
    nobody_uid=$(id -u nobody); nogroup_gid=$(getent group nogroup | cut -d: -f3)
    : > "$dir/maillog"
    cat > "$dir/etc/main.cf" <<EOF
compatibility_level = 3.6
config_directory = $dir/etc
queue_directory = $dir/spool
data_directory = $dir/data
daemon_directory = $daemon_directory
meta_directory = $meta_directory
shlib_directory = $shlib_directory
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-e2e.test
mydomain = e2e.test
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
local_recipient_maps =
alias_maps =
alias_database =
relayhost =
# every domain is "ours": deliver everything into one Maildir
virtual_mailbox_domains = static:all
virtual_mailbox_base = $dir/mail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:$nobody_uid
virtual_gid_maps = static:$nogroup_gid
virtual_minimum_uid = 1
virtual_transport = virtual
smtpd_tls_security_level = may
smtpd_tls_cert_file = $dir/etc/cert.pem
smtpd_tls_key_file = $dir/etc/key.pem
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
smtp_tls_security_level = none
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
biff = no
append_dot_mydomain = no
local_header_rewrite_clients =
always_add_missing_headers = no
readme_directory = no
smtputf8_enable = yes
message_size_limit = 52428800
virtual_mailbox_limit = 0
mailbox_size_limit = 0
delay_warning_time = 0
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
smtpd_client_connection_rate_limit = 0
anvil_rate_time_unit = 60s
EOF
    main_extra=${6:-}; master_extra=${7:-}
    if [ -n "$master_extra" ]; then
        cp "$master_extra" "$dir/etc/master.cf"
    else
        echo "127.0.0.1:$port inet n - n - - smtpd" > "$dir/etc/master.cf"
    fi
    cat >> "$dir/etc/master.cf" <<EOF
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
    if [ -n "$main_extra" ]; then
        grep -v '^[[:space:]]*#' "$main_extra" | grep -v '^[[:space:]]*$' | while IFS= read -r line; do
            postconf -c "$dir/etc" -e "$line"
        done
    fi
    # create the queue tree with the right owners, then start
    postfix -c "$dir/etc" set-permissions >/dev/null 2>&1 || true
    postfix -c "$dir/etc" check
    postfix -c "$dir/etc" start
    # wait until smtpd answers
    i=0
    while [ $i -lt 100 ]; do
        if command -v python3 >/dev/null && python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2).close()" 2>/dev/null; then
            exit 0
        fi
        i=$((i+1)); sleep 0.1
    done
    echo "postfix.sh: instance did not start listening on 127.0.0.1:$port" >&2
    cat "$dir/maillog" >&2 || true
    exit 1
    ;;
stop)
    [ -f "$dir/etc/main.cf" ] || exit 0
    pidfile="$dir/spool/pid/master.pid"
    pid=$(tr -dc 0-9 < "$pidfile" 2>/dev/null || true)
    postfix -c "$dir/etc" stop 2>/dev/null || true
    if [ -n "$pid" ]; then
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do i=$((i+1)); sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            postfix -c "$dir/etc" abort 2>/dev/null || true
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    ;;
log)
    cat "$dir/maillog" 2>/dev/null || true
    ;;
*)
    echo "usage: postfix.sh start DIR PORT CERT KEY | stop DIR | log DIR" >&2; exit 2 ;;
esac
