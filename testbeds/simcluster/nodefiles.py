"""What each simulated node is made of besides its network: the keeper script that builds its
namespaces and private mounts, and the sshd and podman configuration written for it.

Formatted with the node's state folder as ``{d}`` (the configs) or given it as ``$1`` (the script).
"""

# Runs inside the node's fresh mount+UTS namespace, already in its network namespace.
# /sys is remounted so it shows this netns's interfaces; /sys/fs/cgroup is carried over because
# runc needs it. /var/tmp (the harness state) stays shared; /tmp, /root, /srv, /run are private.
KEEPER_SCRIPT = r"""
set -e
d=$1 st=$2 node=$3
shift 3
# Host paths the nodes must keep seeing (the project and its Python) even where they lie under
# /root or /tmp, which become private below: park a bind of each, then put it back in place.
i=0
for p in "$@"; do
  i=$((i + 1)); mkdir -p "$d/keep/$i"; mount --bind "$p" "$d/keep/$i"
done
mkdir -p "$d/cg"
mount --rbind /sys/fs/cgroup "$d/cg"
umount -l /sys
mount -t sysfs sysfs /sys
mount --rbind "$d/cg" /sys/fs/cgroup
umount -l "$d/cg"
hostname "$node"
mount --bind "$d/root" /root
mount --bind "$d/srv" /srv
mount --bind "$d/tmp" /tmp
mount -t tmpfs -o mode=755,size=64m tmpfs /run
mkdir -m 755 /run/sshd
mount -t tmpfs -o mode=1777,size=256m tmpfs /dev/shm
mount --bind "$st/hosts" /etc/hosts
mount --bind "$d/hostname" /etc/hostname
mount --bind "$d/etc-containers" /etc/containers
mount --bind "$st/bin" /usr/local/sbin
i=0
for p in "$@"; do
  i=$((i + 1)); mkdir -p "$p"; mount --bind "$d/keep/$i" "$p"; umount -l "$d/keep/$i"
done
touch "$d/ready"
exec sleep infinity
"""

SSHD_CONFIG = """\
Port 22
HostKey {d}/ssh_host_ed25519_key
PidFile none
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 200:30:400
MaxSessions 64
Subsystem sftp internal-sftp
"""

# Fixes found on this kind of machine (TESTBED.md): no CAP_SYS_RESOURCE, hybrid cgroups, no
# systemd journal. netns=host means no CNI/netavark is needed, as with `--network host`.
CONTAINERS_CONF = """\
[containers]
netns = "host"
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "/run/libpod"

[network]
network_config_dir = "{d}/networks"
"""

STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{d}/containers"
runroot = "/run/containers/storage"
"""
