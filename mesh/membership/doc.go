// Package membership is an agent's place in its cluster: whether it runs
// a raft server or a client (a streamed replica of the catalog, writes
// through the leader), how it gets there (bootstrap, a join with a token,
// a restart that resumes from its data dir), and how it leaves.
//
// Data enters as the agent's configuration, its node ID and catalog at
// Start, and as join and leave requests from the HTTP API (it implements
// the cluster half of httpapi.Operator, discovery.Writer and
// httpapi.Cluster). It leaves as raft commands or forwarded writes, and
// as marks in the data dir: the role a node joined with, the servers a
// client knows, and that a node left (a restart then stays out).
//
// It must not serve HTTP or touch the data plane: the agent passes what
// happens on leave (capture comes off) as a function.
package membership
