// Package raft is vmesh's consensus layer: hashicorp/raft (imported as
// hraft) with a bbolt log and stable store (raft-boltdb/v2), a file snapshot
// store, and the FSM that applies commands to the discovery catalog.
//
// Data enters through Server.Apply(ctx, cmd): the command is encoded as one
// type byte plus msgpack, committed, and applied by the FSM on every node;
// Apply returns once the local catalog has it. The FSM is a dispatch table
// on that type byte; an unknown type stops the node unless the type carries
// the ignorable bit (rolling upgrades). Snapshots stream the catalog's
// records; Restore swaps in a new catalog and wakes blocked readers.
//
// Client replicas leave through the Subscribe stream on the cluster port
// (stream.go): each server keeps a bounded history of the replicated
// commands its FSM applied — never KV, join tokens or the CA key — and
// sends a subscriber the deltas after its index, or a filtered snapshot
// first when the history no longer covers it. Replica (replica.go) is the
// client end: it applies them with the FSM's dispatch table into its own
// catalog, resumes from its index, and fails over between servers.
//
// A node is a server (raft) or a client (roles.go): the leader records the
// role a joiner asked for in its catalog node and refuses AddPeer to a
// client. Client (client.go) is a client node's whole link to the cluster:
// its Replica, its heartbeat, and its writes forwarded to the leader with
// its node certificate, which the leader authorizes (forward.go).
//
// Certificates (identity.go, renew.go, leaf.go): node certificates are
// short-lived and each node renews its own through RenewNode; admitPeer
// decides what a peer's certificate may be used for (an expired one only
// renews, within a grace; a revoked one nothing, renewal included). Leaves for the proxy and its services are made
// by each agent's LeafIssuer and signed through a LeafSigner: a server's
// own CA key, or a server over SignLeaf, which signs only for the
// caller's own node.
//
// Session TTLs are the leader's (sessions.go): timers rebuilt from the
// catalog when a leadership starts, renewed by the SessionRenew RPC, and
// a session whose timer fires destroyed through raft. Transactions reach
// the leader through the Txn RPC, which brings their result back.
//
// Trust on the cluster port (trust.go): every handshake, in both
// directions, checks the peer's chain against every root the local
// catalog's CA record lists and its node name against the catalog's deny
// list. A node that leaves or that an operator removes is revoked
// (revoke.go); an operator rotates the CA (rotate.go): the leader
// cross-signs a new root with the old key and seals the new key to every
// server, and the old root stays trusted until no certificate it signed
// is valid. Renewals sign with the active key and carry the chain, so
// node certificates move to the new key with their next renewal.
//
// Metrics leave through NewCollector (this node's raft state, read at
// scrape time) and MetricsSink (raft's own go-metrics series); the agent
// registers both.
//
// It must not serve HTTP or know about the data plane. A single node runs
// on an in-memory transport; the cluster transport plugs in via Config.
package raft
