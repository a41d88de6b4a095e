package discovery

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/acl"
)

// ACL state: tokens, policies and roles in Consul's shape (package acl),
// kept on the servers only. Like join tokens they never reach a client's
// replica: a client asks a server to resolve a token (raft's ResolveToken
// RPC), and learns that ACLs changed from an ACLChanged marker in its
// stream, which drops its cache.
//
// SecretIDs are stored as Consul stores them, so a token read by someone
// with acl:write shows its secret; raft.db and snapshots therefore hold
// secrets, and live only on servers, 0600 in a 0700 data dir.

const (
	tableACLTokens   = "acl-tokens"
	tableACLPolicies = "acl-policies"
	tableACLRoles    = "acl-roles"
	tableACLMeta     = "acl-meta"
	// tableACLEpoch is only an index: the raft index of the last ACL
	// change. On a client it moves with each ACLChanged marker.
	tableACLEpoch  = "acl-epoch"
	aclBootstrapID = "bootstrap"
)

// Command types of the ACL state; numbers as in commands.go.
const (
	ACLTokenSetType     MessageType = 40
	ACLTokenDeleteType  MessageType = 41
	ACLPolicySetType    MessageType = 42
	ACLPolicyDeleteType MessageType = 43
	ACLRoleSetType      MessageType = 44
	ACLRoleDeleteType   MessageType = 45
	ACLBootstrapType    MessageType = 46
	// ACLChangedType is what a client's stream carries instead of an ACL
	// command: that ACLs changed, and nothing of the change.
	ACLChangedType MessageType = 47
)

// Snapshot records of the ACL state.
const (
	RecordACLToken  RecordType = 40
	RecordACLPolicy RecordType = 41
	RecordACLRole   RecordType = 42
	RecordACLMeta   RecordType = 43
)

// ACLTokenSetRequest creates or replaces a token (by AccessorID).
type ACLTokenSetRequest struct{ Token acl.Token }

// ACLTokenDeleteRequest deletes a token.
type ACLTokenDeleteRequest struct{ AccessorID string }

// ACLPolicySetRequest creates or replaces a policy (by ID).
type ACLPolicySetRequest struct{ Policy acl.Policy }

// ACLPolicyDeleteRequest deletes a policy.
type ACLPolicyDeleteRequest struct{ ID string }

// ACLRoleSetRequest creates or replaces a role (by ID).
type ACLRoleSetRequest struct{ Role acl.Role }

// ACLRoleDeleteRequest deletes a role.
type ACLRoleDeleteRequest struct{ ID string }

// ACLBootstrapRequest stores the initial management token, with the
// built-in policies and the anonymous token, once: it fails when the ACL
// system was bootstrapped already, unless ResetIndex names the index of
// that bootstrap (Consul's reset procedure).
type ACLBootstrapRequest struct {
	Token      acl.Token
	ResetIndex uint64
}

// ACLChangedRequest marks an ACL change on a client's replica.
type ACLChangedRequest struct{}

func (ACLTokenSetRequest) MessageType() MessageType     { return ACLTokenSetType }
func (ACLTokenDeleteRequest) MessageType() MessageType  { return ACLTokenDeleteType }
func (ACLPolicySetRequest) MessageType() MessageType    { return ACLPolicySetType }
func (ACLPolicyDeleteRequest) MessageType() MessageType { return ACLPolicyDeleteType }
func (ACLRoleSetRequest) MessageType() MessageType      { return ACLRoleSetType }
func (ACLRoleDeleteRequest) MessageType() MessageType   { return ACLRoleDeleteType }
func (ACLBootstrapRequest) MessageType() MessageType    { return ACLBootstrapType }
func (ACLChangedRequest) MessageType() MessageType      { return ACLChangedType }

// IsACLCommand says whether t changes the ACL state.
func IsACLCommand(t MessageType) bool {
	return t >= ACLTokenSetType && t <= ACLBootstrapType
}

// ACLMeta is the ACL system's own state: when it was bootstrapped.
type ACLMeta struct {
	ID             string
	BootstrapIndex uint64
}

// ErrACLBootstrapped is a second bootstrap without the reset index.
var ErrACLBootstrapped = fmt.Errorf("%w: ACL bootstrap no longer allowed", ErrInvalid)

func aclTables(tables map[string]*memdb.TableSchema) {
	str := func(f string) memdb.Indexer { return &memdb.StringFieldIndex{Field: f} }
	tables[tableACLTokens] = &memdb.TableSchema{Name: tableACLTokens, Indexes: map[string]*memdb.IndexSchema{
		"id":     {Name: "id", Unique: true, Indexer: str("AccessorID")},
		"secret": {Name: "secret", Unique: true, Indexer: str("SecretID")},
	}}
	tables[tableACLPolicies] = &memdb.TableSchema{Name: tableACLPolicies, Indexes: map[string]*memdb.IndexSchema{
		"id":   {Name: "id", Unique: true, Indexer: str("ID")},
		"name": {Name: "name", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name", Lowercase: true}},
	}}
	tables[tableACLRoles] = &memdb.TableSchema{Name: tableACLRoles, Indexes: map[string]*memdb.IndexSchema{
		"id":   {Name: "id", Unique: true, Indexer: str("ID")},
		"name": {Name: "name", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name", Lowercase: true}},
	}}
	tables[tableACLMeta] = &memdb.TableSchema{Name: tableACLMeta, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: str("ID")},
	}}
}

// aclWrite runs change in a write transaction and bumps the ACL tables'
// and the epoch's index.
func (s *Store) aclWrite(idx uint64, table string, change func(tx *memdb.Txn) error) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	if err := change(tx); err != nil {
		return err
	}
	if err := bumpIndex(tx, idx, table, tableACLEpoch); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// ACLTokenSet stores a token. Its SecretID may not belong to another
// token.
//
// Its policy and role links are completed here, in the FSM, so that a
// write from any agent names them by ID or by name alike: a link must
// name an existing policy or role, and is stored with both its ID and
// name. An update (same AccessorID) may leave SecretID empty to keep it.
func (s *Store) ACLTokenSet(idx uint64, t *acl.Token) error {
	if t.AccessorID == "" {
		return fmt.Errorf("%w: a token needs an AccessorID", ErrInvalid)
	}
	return s.aclWrite(idx, tableACLTokens, func(tx *memdb.Txn) error {
		c := *t
		c.CreateIndex, c.ModifyIndex = idx, idx
		if raw, err := tx.First(tableACLTokens, "id", t.AccessorID); err != nil {
			return err
		} else if raw != nil {
			old := raw.(*acl.Token)
			c.CreateIndex, c.CreateTime = old.CreateIndex, old.CreateTime
			if c.SecretID == "" {
				c.SecretID = old.SecretID
			}
			if old.SecretID != c.SecretID {
				return fmt.Errorf("%w: SecretID: a token's secret cannot change", ErrInvalid)
			}
		}
		if c.SecretID == "" {
			return fmt.Errorf("%w: SecretID: a new token needs one", ErrInvalid)
		}
		if raw, err := tx.First(tableACLTokens, "secret", c.SecretID); err != nil {
			return err
		} else if raw != nil && raw.(*acl.Token).AccessorID != c.AccessorID {
			return fmt.Errorf("%w: SecretID is already in use", ErrInvalid)
		}
		var err error
		if c.Policies, err = completeLinks(tx, tableACLPolicies, "Policies", "policy", c.Policies); err != nil {
			return err
		}
		if c.Roles, err = completeLinks(tx, tableACLRoles, "Roles", "role", c.Roles); err != nil {
			return err
		}
		return tx.Insert(tableACLTokens, &c)
	})
}

// completeLinks gives every link both its ID and its name, from table,
// and drops a link to one already linked (by ID or by name), as Consul
// does.
func completeLinks(tx *memdb.Txn, table, field, what string, links []acl.Link) ([]acl.Link, error) {
	out := make([]acl.Link, 0, len(links))
	seen := map[string]bool{}
	for i, l := range links {
		var raw any
		var err error
		switch {
		case l.ID != "":
			raw, err = tx.First(table, "id", l.ID)
		case l.Name != "":
			raw, err = tx.First(table, "name", l.Name)
		default:
			return nil, fmt.Errorf("%w: %s[%d]: a link needs an ID or a Name", ErrInvalid, field, i)
		}
		if err != nil {
			return nil, err
		}
		if raw == nil {
			return nil, fmt.Errorf("%w: %s[%d]: no %s with ID %q or name %q", ErrInvalid, field, i, what, l.ID, l.Name)
		}
		var link acl.Link
		switch v := raw.(type) {
		case *acl.Policy:
			link = acl.Link{ID: v.ID, Name: v.Name}
		case *acl.Role:
			link = acl.Link{ID: v.ID, Name: v.Name}
		}
		if !seen[link.ID] {
			seen[link.ID] = true
			out = append(out, link)
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// ACLTokenDelete deletes a token; deleting a missing one is not an error.
func (s *Store) ACLTokenDelete(idx uint64, accessor string) error {
	return s.aclWrite(idx, tableACLTokens, func(tx *memdb.Txn) error {
		_, err := tx.DeleteAll(tableACLTokens, "id", accessor)
		return err
	})
}

// ACLPolicySet stores a policy; its name may not belong to another.
func (s *Store) ACLPolicySet(idx uint64, p *acl.Policy) error {
	if p.ID == "" || p.Name == "" {
		return fmt.Errorf("%w: a policy needs an ID and a Name", ErrInvalid)
	}
	return s.aclWrite(idx, tableACLPolicies, func(tx *memdb.Txn) error {
		if raw, err := tx.First(tableACLPolicies, "name", p.Name); err != nil {
			return err
		} else if raw != nil && raw.(*acl.Policy).ID != p.ID {
			return fmt.Errorf("%w: a policy named %q already exists", ErrInvalid, p.Name)
		}
		c := *p
		c.CreateIndex, c.ModifyIndex = idx, idx
		if raw, err := tx.First(tableACLPolicies, "id", p.ID); err != nil {
			return err
		} else if raw != nil {
			c.CreateIndex = raw.(*acl.Policy).CreateIndex
		}
		return tx.Insert(tableACLPolicies, &c)
	})
}

// ACLPolicyDelete deletes a policy.
func (s *Store) ACLPolicyDelete(idx uint64, id string) error {
	return s.aclWrite(idx, tableACLPolicies, func(tx *memdb.Txn) error {
		_, err := tx.DeleteAll(tableACLPolicies, "id", id)
		return err
	})
}

// ACLRoleSet stores a role; its name may not belong to another.
func (s *Store) ACLRoleSet(idx uint64, r *acl.Role) error {
	if r.ID == "" || r.Name == "" {
		return fmt.Errorf("%w: a role needs an ID and a Name", ErrInvalid)
	}
	return s.aclWrite(idx, tableACLRoles, func(tx *memdb.Txn) error {
		if raw, err := tx.First(tableACLRoles, "name", r.Name); err != nil {
			return err
		} else if raw != nil && raw.(*acl.Role).ID != r.ID {
			return fmt.Errorf("%w: a role named %q already exists", ErrInvalid, r.Name)
		}
		c := *r
		c.CreateIndex, c.ModifyIndex = idx, idx
		if raw, err := tx.First(tableACLRoles, "id", r.ID); err != nil {
			return err
		} else if raw != nil {
			c.CreateIndex = raw.(*acl.Role).CreateIndex
		}
		var err error
		if c.Policies, err = completeLinks(tx, tableACLPolicies, "Policies", "policy", c.Policies); err != nil {
			return err
		}
		return tx.Insert(tableACLRoles, &c)
	})
}

// ACLRoleDelete deletes a role.
func (s *Store) ACLRoleDelete(idx uint64, id string) error {
	return s.aclWrite(idx, tableACLRoles, func(tx *memdb.Txn) error {
		_, err := tx.DeleteAll(tableACLRoles, "id", id)
		return err
	})
}

// ACLBootstrap stores the initial management token, the built-in
// policies and the anonymous token, unless the system was bootstrapped
// (then only with resetIndex equal to that bootstrap's index).
func (s *Store) ACLBootstrap(idx uint64, t *acl.Token, resetIndex uint64) error {
	return s.aclWrite(idx, tableACLMeta, func(tx *memdb.Txn) error {
		raw, err := tx.First(tableACLMeta, "id", aclBootstrapID)
		if err != nil {
			return err
		}
		if raw != nil {
			done := raw.(*ACLMeta).BootstrapIndex
			if resetIndex != done {
				return fmt.Errorf("%w (reset index: %d)", ErrACLBootstrapped, done)
			}
		}
		for _, p := range []acl.Policy{acl.ManagementPolicy(), acl.ReadOnlyPolicy()} {
			if old, err := tx.First(tableACLPolicies, "id", p.ID); err != nil {
				return err
			} else if old == nil {
				p.CreateIndex, p.ModifyIndex = idx, idx
				if err := tx.Insert(tableACLPolicies, &p); err != nil {
					return err
				}
			}
		}
		if old, err := tx.First(tableACLTokens, "id", acl.AnonymousAccessorID); err != nil {
			return err
		} else if old == nil {
			anon := acl.AnonymousToken()
			anon.CreateIndex, anon.ModifyIndex = idx, idx
			if err := tx.Insert(tableACLTokens, &anon); err != nil {
				return err
			}
		}
		if raw, err := tx.First(tableACLTokens, "secret", t.SecretID); err != nil {
			return err
		} else if raw != nil {
			return fmt.Errorf("%w: SecretID is already in use", ErrInvalid)
		}
		c := *t
		c.CreateIndex, c.ModifyIndex = idx, idx
		if err := tx.Insert(tableACLTokens, &c); err != nil {
			return err
		}
		if err := bumpIndex(tx, idx, tableACLTokens, tableACLPolicies); err != nil {
			return err
		}
		return tx.Insert(tableACLMeta, &ACLMeta{ID: aclBootstrapID, BootstrapIndex: idx})
	})
}

// ACLChanged moves the ACL epoch (a client's marker).
func (s *Store) ACLChanged(idx uint64) error {
	return s.aclWrite(idx, tableACLEpoch, func(*memdb.Txn) error { return nil })
}

// ACLEpoch is the raft index of the last ACL change this catalog saw:
// a cache of resolved tokens is good while it stays the same.
func (s *Store) ACLEpoch() uint64 {
	return maxIndex(s.readTxn(nil), tableACLEpoch)
}

// ACLBootstrapIndex is the index of the ACL bootstrap, 0 before it.
func (s *Store) ACLBootstrapIndex() (uint64, error) {
	raw, err := s.readTxn(nil).First(tableACLMeta, "id", aclBootstrapID)
	if err != nil || raw == nil {
		return 0, err
	}
	return raw.(*ACLMeta).BootstrapIndex, nil
}

// ACLToken returns a token by AccessorID, or nil.
func (s *Store) ACLToken(ws memdb.WatchSet, accessor string) (uint64, *acl.Token, error) {
	return aclGet[acl.Token](s, ws, tableACLTokens, "id", accessor)
}

// TokenBySecret returns the token with secret, or nil (acl.Store).
func (s *Store) TokenBySecret(secret string) (*acl.Token, error) {
	_, t, err := aclGet[acl.Token](s, nil, tableACLTokens, "secret", secret)
	return t, err
}

// ACLTokens lists every token, by AccessorID.
func (s *Store) ACLTokens(ws memdb.WatchSet) (uint64, []*acl.Token, error) {
	return aclList[acl.Token](s, ws, tableACLTokens)
}

// ACLPolicy returns a policy by ID, or nil.
func (s *Store) ACLPolicy(ws memdb.WatchSet, id string) (uint64, *acl.Policy, error) {
	return aclGet[acl.Policy](s, ws, tableACLPolicies, "id", id)
}

// PolicyByID and the other lookups below are acl.Store.
func (s *Store) PolicyByID(id string) (*acl.Policy, error) {
	_, p, err := aclGet[acl.Policy](s, nil, tableACLPolicies, "id", id)
	return p, err
}

func (s *Store) PolicyByName(name string) (*acl.Policy, error) {
	_, p, err := aclGet[acl.Policy](s, nil, tableACLPolicies, "name", name)
	return p, err
}

func (s *Store) RoleByID(id string) (*acl.Role, error) {
	_, r, err := aclGet[acl.Role](s, nil, tableACLRoles, "id", id)
	return r, err
}

func (s *Store) RoleByName(name string) (*acl.Role, error) {
	_, r, err := aclGet[acl.Role](s, nil, tableACLRoles, "name", name)
	return r, err
}

// ACLPolicies lists every policy, by ID.
func (s *Store) ACLPolicies(ws memdb.WatchSet) (uint64, []*acl.Policy, error) {
	return aclList[acl.Policy](s, ws, tableACLPolicies)
}

// ACLRole returns a role by ID, or nil.
func (s *Store) ACLRole(ws memdb.WatchSet, id string) (uint64, *acl.Role, error) {
	return aclGet[acl.Role](s, ws, tableACLRoles, "id", id)
}

// ACLRoles lists every role, by ID.
func (s *Store) ACLRoles(ws memdb.WatchSet) (uint64, []*acl.Role, error) {
	return aclList[acl.Role](s, ws, tableACLRoles)
}

func aclGet[T any](s *Store, ws memdb.WatchSet, table, index, key string) (uint64, *T, error) {
	tx := s.readTxn(ws)
	ch, raw, err := tx.FirstWatch(table, index, key)
	if ws != nil {
		ws.Add(ch)
	}
	idx := maxIndex(tx, table)
	if err != nil || raw == nil {
		return idx, nil, err
	}
	return idx, raw.(*T), nil
}

func aclList[T any](s *Store, ws memdb.WatchSet, table string) (uint64, []*T, error) {
	tx := s.readTxn(ws)
	it, err := tx.Get(table, "id")
	if err != nil {
		return 0, nil, err
	}
	if ws != nil {
		ws.Add(it.WatchCh())
	}
	var out []*T
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*T))
	}
	return maxIndex(tx, table), out, nil
}

// ACLQuery is a read of the ACL state: Op is token, token-self, tokens,
// policy, policy-name, policies, role, role-name or roles; ID the
// AccessorID, policy or role ID, or name. Token is the caller's secret
// (for token-self, and to authorize the read on a server).
type ACLQuery struct {
	Op    string
	ID    string
	Token string
}

// ACLResult is an ACLQuery's answer.
type ACLResult struct {
	Index    uint64
	Token    *acl.Token    `json:",omitempty"`
	Tokens   []*acl.Token  `json:",omitempty"`
	Policy   *acl.Policy   `json:",omitempty"`
	Policies []*acl.Policy `json:",omitempty"`
	Role     *acl.Role     `json:",omitempty"`
	Roles    []*acl.Role   `json:",omitempty"`
}

// hiddenSecret is what a token's SecretID reads as without acl:write, as
// in Consul.
const hiddenSecret = "<hidden>"

// ACLRead answers q from s for a caller with authz: acl:read for
// everything but the caller's own token, and SecretIDs only with
// acl:write. A missing object is ErrNotFound.
func ACLRead(s *Store, authz *acl.Authorizer, q ACLQuery) (ACLResult, error) {
	var res ACLResult
	if q.Op != "token-self" {
		if err := authz.ACLRead(); err != nil {
			return res, err
		}
	}
	showSecrets := authz.ACLWrite() == nil
	hide := func(t *acl.Token) *acl.Token {
		if t == nil || showSecrets {
			return t
		}
		c := *t
		c.SecretID = hiddenSecret
		return &c
	}
	var err error
	var found bool
	switch q.Op {
	case "token":
		res.Index, res.Token, err = s.ACLToken(nil, q.ID)
		res.Token, found = hide(res.Token), res.Token != nil
	case "token-self":
		res.Token, err = s.TokenBySecret(q.Token)
		found = res.Token != nil
	case "tokens":
		var ts []*acl.Token
		res.Index, ts, err = s.ACLTokens(nil)
		for _, t := range ts {
			res.Tokens = append(res.Tokens, hide(t))
		}
		found = true
	case "policy":
		res.Index, res.Policy, err = s.ACLPolicy(nil, q.ID)
		found = res.Policy != nil
	case "policy-name":
		res.Policy, err = s.PolicyByName(q.ID)
		found = res.Policy != nil
	case "policies":
		res.Index, res.Policies, err = s.ACLPolicies(nil)
		found = true
	case "role":
		res.Index, res.Role, err = s.ACLRole(nil, q.ID)
		found = res.Role != nil
	case "role-name":
		res.Role, err = s.RoleByName(q.ID)
		found = res.Role != nil
	case "roles":
		res.Index, res.Roles, err = s.ACLRoles(nil)
		found = true
	default:
		return res, fmt.Errorf("%w: ACL read %q", ErrInvalid, q.Op)
	}
	if err != nil {
		return res, err
	}
	if !found {
		return res, fmt.Errorf("%w: %s %q", ErrNotFound, q.Op, q.ID)
	}
	if res.Index == 0 {
		res.Index = maxIndex(s.readTxn(nil), tableACLTokens, tableACLPolicies, tableACLRoles)
	}
	return res, nil
}
