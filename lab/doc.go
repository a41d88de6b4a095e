// Package lab holds vmesh's two labs and their tests; it has no Go API.
//
// The netns lab (netns.sh) makes each "VM" a network namespace on a
// bridge, with its own agent process and demo apps; CI runs it as root.
// The Vagrant lab (vagrant.sh, Vagrantfile) does the same on three Debian
// 12 VMs under libvirt and systemd, from a box that box/build.sh builds
// from Debian's packages; CI runs it where KVM is usable. Both configure
// their VMs with provision.sh (the layout of /etc/vmesh and /var/lib/vmesh
// that `vmesh install` uses), run the demo apps of demoapp/ (a monolith
// and two microservices that call each other by mesh name), and check the
// mesh with traffic.sh. docs/lab.md walks through both.
//
// It must not import the rest of vmesh: the labs drive the real binary,
// built by netns.sh, as an operator would. Its tests run the netns lab
// end to end and leave the host as they found it (namespaces, links,
// iptables, processes), validate the Vagrantfile with `vagrant validate`,
// and check the demo apps' unit with `systemd-analyze verify`.
package lab
