package discovery

import (
	"encoding/json"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// TestInstanceUserCompatible: Instance gained User, then UserPort. An
// entry written before (no User, no UserPort) decodes with both empty, and
// an older agent decoding a new entry ignores them, as raft's msgpack
// codec does; the same holds for JSON.
func TestInstanceUserCompatible(t *testing.T) {
	h := &codec.MsgpackHandle{WriteExt: true}
	type oldInstance struct {
		Node, ID, Service string
		Port              int
		Meta              map[string]string
		Protocol          string
		CreateIndex       uint64
	}
	var buf []byte
	if err := codec.NewEncoderBytes(&buf, h).Encode(&oldInstance{Node: "n1", ID: "web-1", Service: "web", Port: 80, CreateIndex: 7}); err != nil {
		t.Fatal(err)
	}
	var in Instance
	if err := codec.NewDecoderBytes(buf, h).Decode(&in); err != nil {
		t.Fatalf("decoding an old entry: %v", err)
	}
	if in.ID != "web-1" || in.Port != 80 || in.CreateIndex != 7 || in.User != "" || in.UserPort != 0 {
		t.Errorf("old entry decoded as %+v", in)
	}
	// An entry with User but no UserPort (written between the two).
	type userInstance struct {
		Node, ID, Service, User string
		Port                    int
	}
	buf = nil
	if err := codec.NewEncoderBytes(&buf, h).Encode(&userInstance{Node: "n1", ID: "web-1", Service: "web", User: "alice", Port: 80}); err != nil {
		t.Fatal(err)
	}
	in = Instance{}
	if err := codec.NewDecoderBytes(buf, h).Decode(&in); err != nil || in.User != "alice" || in.UserPort != 0 {
		t.Errorf("an entry without UserPort decoded as %+v, %v", in, err)
	}
	buf = nil
	if err := codec.NewEncoderBytes(&buf, h).Encode(&Instance{Node: "n1", ID: "web-1", Service: "web", Port: 80, User: "alice", UserPort: 15102}); err != nil {
		t.Fatal(err)
	}
	var old oldInstance
	if err := codec.NewDecoderBytes(buf, h).Decode(&old); err != nil {
		t.Fatalf("an older agent decoding a new entry: %v", err)
	}
	if old.ID != "web-1" || old.Port != 80 {
		t.Errorf("new entry decoded by an old agent as %+v", old)
	}
	var mid userInstance
	if err := codec.NewDecoderBytes(buf, h).Decode(&mid); err != nil || mid.User != "alice" {
		t.Errorf("an agent without UserPort decoding a new entry: %+v, %v", mid, err)
	}
	var back Instance
	if err := codec.NewDecoderBytes(buf, h).Decode(&back); err != nil || back.User != "alice" || back.UserPort != 15102 {
		t.Errorf("round trip: %+v, %v", back, err)
	}

	j, err := json.Marshal(&oldInstance{Node: "n1", ID: "web-1", Service: "web", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	back = Instance{}
	if err := json.Unmarshal(j, &back); err != nil || back.ID != "web-1" || back.UserPort != 0 {
		t.Errorf("old JSON decoded as %+v, %v", back, err)
	}
	if j, err = json.Marshal(&Instance{Node: "n1", ID: "web-1", Service: "web", Port: 80, User: "alice", UserPort: 15102}); err != nil {
		t.Fatal(err)
	}
	old = oldInstance{}
	if err := json.Unmarshal(j, &old); err != nil || old.ID != "web-1" || old.Port != 80 {
		t.Errorf("new JSON decoded by an old agent as %+v, %v", old, err)
	}
	back = Instance{}
	if err := json.Unmarshal(j, &back); err != nil || back.User != "alice" || back.UserPort != 15102 {
		t.Errorf("JSON round trip: %+v, %v", back, err)
	}
}
