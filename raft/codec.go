package raft

import (
	"bytes"
	"fmt"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/vmesh/vmesh/discovery"
)

// msgpackHandle is shared: codec handles are safe for concurrent use once
// configured. WriteExt keeps []byte (KV values) distinct from strings.
var msgpackHandle = &codec.MsgpackHandle{WriteExt: true}

// encodeCommand renders a command as a log entry: one type byte, then the
// command in msgpack.
func encodeCommand(cmd discovery.Command) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte(byte(cmd.MessageType()))
	if err := codec.NewEncoder(&buf, msgpackHandle).Encode(cmd); err != nil {
		return nil, fmt.Errorf("encoding command %d: %w", cmd.MessageType(), err)
	}
	return buf.Bytes(), nil
}

func decode(buf []byte, out any) error {
	return codec.NewDecoderBytes(buf, msgpackHandle).Decode(out)
}
