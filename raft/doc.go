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
// Metrics leave through NewCollector (this node's raft state, read at
// scrape time) and MetricsSink (raft's own go-metrics series); the agent
// registers both.
//
// It must not serve HTTP or know about the data plane. A single node runs
// on an in-memory transport; the cluster transport plugs in via Config.
package raft
