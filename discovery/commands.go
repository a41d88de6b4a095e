package discovery

import (
	"context"
	"time"
)

// MessageType is the one-byte type of a raft log entry. The numbers are part
// of the log format: never reuse or renumber one.
type MessageType uint8

// Command types.
const (
	RegisterNodeType      MessageType = 1
	DeregisterNodeType    MessageType = 2
	RegisterServiceType   MessageType = 3
	DeregisterServiceType MessageType = 4
	RegisterCheckType     MessageType = 5
	DeregisterCheckType   MessageType = 6
	UpdateCheckType       MessageType = 7
	KVType                MessageType = 8
	SetCAType             MessageType = 9
	TokenCreateType       MessageType = 10
	TokenDeleteType       MessageType = 11
	ConfigEntryType       MessageType = 12
	VIPType               MessageType = 13 // vips.go
	IntentionType         MessageType = 14
	TokenUseType          MessageType = 15 // cluster.go: spend one use of a join token
	TokenRevokeType       MessageType = 16
	RevocationType        MessageType = 17 // revocations.go: the cluster port's deny list
	SessionType           MessageType = 18 // session.go (17 is the revocation list)
	TxnType               MessageType = 19 // txn.go: KV transactions and locks
	// 20, 21 are the catalog's own writes (catalog_register.go), 22
	// autopilot's configuration (autopilot.go).
	// 40-47 are the ACL commands (acl.go).

	// IgnoreUnknownTypeFlag marks a command that an older agent that does
	// not know its type may skip instead of stopping: commands added in a
	// rolling upgrade set it when losing them on old agents is harmless.
	IgnoreUnknownTypeFlag MessageType = 0x80
)

// Command is a write to the catalog. Every write goes through Writer.Apply.
type Command interface {
	MessageType() MessageType
}

// Writer applies commands through raft. Apply returns once the command is
// committed and applied to this node's catalog, with its raft index; an
// error the catalog returns for the command (ErrCASConflict, ErrNotFound)
// comes back as the error, wrapped.
type Writer interface {
	Apply(ctx context.Context, cmd Command) (uint64, error)
}

// RegisterNodeRequest creates or updates a node.
type RegisterNodeRequest struct{ Node Node }

// DeregisterNodeRequest removes a node with its instances and checks.
type DeregisterNodeRequest struct{ Node string }

// RegisterServiceRequest creates or updates an instance and sets its
// checks; Sidecar is the connect-proxy record that describes the node
// proxy as its sidecar (nil: none, and one it had is removed; sidecar.go).
type RegisterServiceRequest struct {
	Instance Instance
	Checks   []*Check
	Sidecar  *Instance `json:",omitempty"`
}

// DeregisterServiceRequest removes an instance and its checks.
type DeregisterServiceRequest struct{ Node, ServiceID string }

// RegisterCheckRequest creates or updates a check.
type RegisterCheckRequest struct{ Check Check }

// DeregisterCheckRequest removes a check.
type DeregisterCheckRequest struct{ Node, CheckID string }

// UpdateCheckRequest sets a check's status and output.
type UpdateCheckRequest struct{ Node, CheckID, Status, Output string }

// KVRequest is a key/value operation.
type KVRequest struct {
	Op    KVOp
	Entry KVEntry
}

func (RegisterNodeRequest) MessageType() MessageType      { return RegisterNodeType }
func (DeregisterNodeRequest) MessageType() MessageType    { return DeregisterNodeType }
func (RegisterServiceRequest) MessageType() MessageType   { return RegisterServiceType }
func (DeregisterServiceRequest) MessageType() MessageType { return DeregisterServiceType }
func (RegisterCheckRequest) MessageType() MessageType     { return RegisterCheckType }
func (DeregisterCheckRequest) MessageType() MessageType   { return DeregisterCheckType }
func (UpdateCheckRequest) MessageType() MessageType       { return UpdateCheckType }
func (KVRequest) MessageType() MessageType                { return KVType }

// KVQuery is a KV read, for an agent that holds no KV (a client) to ask a
// server: Op is "get" (one key), "list" (every key under Key) or "keys"
// (the keys under Key, cut after Separator); or a read of the sessions,
// which a client's replica does not hold either: "session-info" (the
// session whose ID is Key), "session-node" (the sessions of node Key) or
// "session-list" (every session).
type KVQuery struct {
	Op         string
	Key        string
	Separator  string
	MinIndex   uint64        // block until the index passes it
	Wait       time.Duration // at most this long
	Consistent bool          // the leader confirms its leadership first
	Token      string        // the caller's ACL token
}

// KVResult is a server's answer to a KVQuery.
type KVResult struct {
	Index       uint64
	Entries     []*KVEntry // get and list
	Keys        []string   // keys
	Sessions    []*Session // session-*
	KnownLeader bool
	LastContact time.Duration
	// Filtered: the caller's token could not read some of what matched.
	Filtered bool
}
