// Package codec is berth's gRPC codec: the protobuf wire format, with
// berth's own messages marshalled and unmarshalled by the code
// protoc-gen-go-vtproto generates beside them (gen/…/*_vtproto.pb.go: no
// reflection, map entries and nested messages decoded directly), and every
// other message (health, reflection, etcd's) by grpc-go's own protobuf
// codec. The bytes on the wire are the same either way: a
// device or service built from the .proto files alone, in any language,
// talks to berth unchanged.
//
// Servers take it with ServerOption and clients with DialOption; it is not
// registered globally, so a program that imports berth's packages keeps
// grpc-go's codec for its own connections.
package codec

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// Name is the codec's name: "proto" (grpc-go's), the content-subtype of
// every gRPC call carrying protobuf, so that peers see nothing different.
const Name = grpcproto.Name

// vtMessage is a message with generated fast paths.
type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT([]byte) (int, error)
	UnmarshalVT([]byte) error
}

// Codec is the gRPC codec (encoding.CodecV2).
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// protobuf is grpc-go's own protobuf codec (registered by its
// encoding/proto package), for every message without generated fast paths.
var protobuf = encoding.GetCodecV2(grpcproto.Name)

// ServerOption makes a gRPC server use Codec for every call.
func ServerOption() grpc.ServerOption { return grpc.ForceServerCodecV2(Codec{}) }

// DialOption makes a client connection use Codec for every call.
func DialOption() grpc.DialOption {
	return grpc.WithDefaultCallOptions(grpc.ForceCodecV2(Codec{}))
}

// Marshal encodes v, a protobuf message, into pooled buffers when it is
// large enough to be worth pooling (as grpc-go's codec does).
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	vt, ok := v.(vtMessage)
	if !ok {
		return protobuf.Marshal(v)
	}
	size := vt.SizeVT()
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if _, err := vt.MarshalToSizedBufferVT(buf); err != nil {
			return nil, fmt.Errorf("codec: marshal %T: %w", v, err)
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if _, err := vt.MarshalToSizedBufferVT((*buf)[:size]); err != nil {
		pool.Put(buf)
		return nil, fmt.Errorf("codec: marshal %T: %w", v, err)
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// Unmarshal decodes data into v, a protobuf message.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	vt, ok := v.(vtMessage)
	if !ok {
		return protobuf.Unmarshal(data, v)
	}
	// UnmarshalVT merges into what v holds; proto.Unmarshal replaces it.
	if r, ok := v.(interface{ Reset() }); ok {
		r.Reset()
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	// UnmarshalVT copies what it keeps (strings, bytes): the buffer goes
	// back to the pool.
	if err := vt.UnmarshalVT(buf.ReadOnlyData()); err != nil {
		return fmt.Errorf("codec: unmarshal %T: %w", v, err)
	}
	return nil
}

// Name returns "proto".
func (Codec) Name() string { return Name }
