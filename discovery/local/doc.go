// Package local is an agent's own state in the catalog, as Consul's
// agent-local state is: State registers this node once the cluster has a
// leader, has its file services synced, and hands the node's checks to
// its check runner; BuildFileServices validates a node's service files
// (each error names its file and line, and a Unix user must exist on this
// host), and FileServices keeps the catalog's file-owned instances of the
// node equal to them.
//
// Data enters from the catalog (reads and watches) and from the agent (the
// node's definition, its file services); it leaves only as writes through
// discovery.Writer, which raft implements. It must not import raft, the
// HTTP API or the check runner: the agent wires them in as functions and
// small interfaces.
package local
