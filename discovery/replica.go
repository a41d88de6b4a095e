package discovery

// What a client's replica of the catalog may hold. Servers stream the
// catalog to clients (raft/stream.go); this file is the one definition of
// which of its tables leave the servers and in which shape, so the server
// that filters and the client that checks agree.

// replicaTables are the tables a client replica receives: what its host
// needs to route, answer DNS and build xDS. KV (application data a client
// does not serve from its replica) and join tokens (secrets) stay on the
// servers.
var replicaTables = map[string]bool{
	tableNodes:         true,
	tableInstances:     true,
	tableChecks:        true,
	tableCA:            true,
	tableConfigEntries: true,
	tableIntentions:    true,
	tableVIPs:          true,
	tableRevocations:   true, // every node checks the deny list on its handshakes
	tableAutopilot:     true, // so a client's API answers it (no secret)
}

// ReplicaRecord returns rec as a client replica may hold it, and false when
// the record must not leave the servers. The CA goes out without its
// private key: a copy is returned, rec is not changed.
func ReplicaRecord(rt RecordType, rec any) (any, bool) {
	switch v := rec.(type) {
	case *Node, *Instance, *Check, *ConfigEntry, *Intention, *VIP, *Revocation, *AutopilotConfig:
		return rec, true
	case *CARoot:
		return v.Public(), true
	case *IndexRecord:
		return rec, replicaTables[v.Table]
	}
	return nil, false
}

// Public is the CA without its private key, sealed or clear: what a
// client may know.
func (ca *CARoot) Public() *CARoot {
	c := *ca
	c.SealedKeys, c.LegacyKeyPEM = nil, nil
	return &c
}
