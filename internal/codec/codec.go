// Package codec is berth's gRPC codec: the protobuf wire format, with
// berth's own messages marshalled and unmarshalled by the code
// protoc-gen-go-vtproto generates beside them (gen/…/*_vtproto.pb.go: no
// reflection, map entries and nested messages decoded directly), and every
// other message (health, reflection, etcd's) by protobuf-go as grpc-go's
// default codec does. The bytes on the wire are the same either way: a
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
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// Name is the codec's name: "proto", the content-subtype of every gRPC
// call carrying protobuf, so that peers see nothing different.
const Name = "proto"

// vtMessage is a message with generated fast paths.
type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT([]byte) (int, error)
	UnmarshalVT([]byte) error
}

// Codec is the gRPC codec (encoding.CodecV2).
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

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
		return marshalProto(v)
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
		m := messageOf(v)
		if m == nil {
			return fmt.Errorf("codec: cannot unmarshal into %T: not a protobuf message", v)
		}
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		return proto.Unmarshal(buf.ReadOnlyData(), m)
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

// marshalProto is grpc-go's own encoding of a message without fast paths.
func marshalProto(v any) (mem.BufferSlice, error) {
	m := messageOf(v)
	if m == nil {
		return nil, fmt.Errorf("codec: cannot marshal %T: not a protobuf message", v)
	}
	size := proto.Size(m)
	// UseCachedSize reuses the Size just computed (the message is not
	// changed in between).
	opts := proto.MarshalOptions{UseCachedSize: true}
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if _, err := opts.MarshalAppend((*buf)[:0], m); err != nil {
		pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// messageOf is v as a protobuf message (APIv2, or APIv1 adapted), nil if
// it is neither.
func messageOf(v any) proto.Message {
	switch m := v.(type) {
	case protoadapt.MessageV2:
		return m
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(m)
	}
	return nil
}
