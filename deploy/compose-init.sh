#!/busybox/sh
# The one-shot setup jobs of deploy/compose.yaml, run by its pki and groups
# services in the image's init target (distroless debug: busybox sh plus
# berth). Every step is idempotent, so `docker compose up` may run them again:
# what already exists is kept.
#
#   compose-init.sh pki     a CA and the certificates of etcd, the control
#                           planes and the executors, etcd's client
#                           certificate for berth, the token key pair
#   compose-init.sh groups  the processing groups group-1 and group-2 in etcd
#
# deploy_test.go reads the berth command lines below and checks that every
# subcommand and flag exists.
set -eu
d=/var/lib/berth
etcd=https://etcd-1:2379,https://etcd-2:2379,https://etcd-3:2379

case "${1:-}" in
pki)
	# Keys are written with mode 0600, owned by the image's user 65532, which
	# every berth service runs as (etcd's image runs as root and reads them).
	[ -f "$d/ca.pem" ] || berth cert ca --dir "$d" --name "berth compose CA"
	[ -f "$d/etcd.pem" ] || berth cert server --dir "$d" --out etcd --host etcd-1,etcd-2,etcd-3,localhost,127.0.0.1
	[ -f "$d/etcd-client.pem" ] || berth cert client berth --dir "$d" --out etcd-client
	[ -f "$d/controlplane.pem" ] || berth cert server --dir "$d" --out controlplane --host controlplane-1,controlplane-2,localhost,127.0.0.1
	[ -f "$d/executor.pem" ] || berth cert server --dir "$d" --out executor --host executor-g1-1,executor-g1-2,executor-g2-1,executor-g2-2
	[ -f "$d/token-signing.pem" ] || berth keygen --private "$d/token-signing.pem" --public "$d/token-public.pem"
	# The CA's key is needed no more: the demo CA issues nothing after this.
	rm -f "$d/ca-key.pem"
	;;
groups)
	for g in group-1 group-2; do
		berth ctl registry --etcd "$etcd" --etcd-ca "$d/ca.pem" --etcd-cert "$d/etcd-client.pem" --etcd-key "$d/etcd-client-key.pem" group put "$g" --labels default --capacity 10000
	done
	;;
*)
	echo "usage: compose-init.sh pki|groups" >&2
	exit 2
	;;
esac
