package codec_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	// Every berth API package, so that its messages are registered.
	_ "github.com/berthproject/berth/gen/berth/admin/v1"
	_ "github.com/berthproject/berth/gen/berth/controlplane/v1"
	_ "github.com/berthproject/berth/gen/berth/executor/v1"
	_ "github.com/berthproject/berth/gen/berth/messaging/v1"
	_ "github.com/berthproject/berth/gen/berth/policy/v1"
	"github.com/berthproject/berth/internal/codec"
)

// fill sets every field of m (oneofs: one member, chosen at random) to
// random values, nested messages down to depth.
func fill(r *rand.Rand, m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if o := fd.ContainingOneof(); o != nil && !o.IsSynthetic() {
			if r.IntN(o.Fields().Len()) != 0 {
				continue
			}
		}
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for range 1 + r.IntN(3) {
				mp.Set(scalar(r, fd.MapKey()).MapKey(), value(r, m, fd.MapValue(), mp.NewValue, depth))
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range 1 + r.IntN(3) {
				l.Append(value(r, m, fd, l.NewElement, depth))
			}
		default:
			if fd.Message() != nil && depth == 0 {
				continue
			}
			m.Set(fd, value(r, m, fd, func() protoreflect.Value { return m.NewField(fd) }, depth))
		}
	}
}

// value is a random value of fd's kind; newMsg gives a fresh message for
// message kinds.
func value(r *rand.Rand, m protoreflect.Message, fd protoreflect.FieldDescriptor, newMsg func() protoreflect.Value, depth int) protoreflect.Value {
	if fd.Message() != nil {
		v := newMsg()
		if depth > 0 {
			fill(r, v.Message(), depth-1)
		}
		return v
	}
	return scalar(r, fd)
}

// scalar is a random value of a scalar field, different from its zero
// value (so that proto3 writes it).
func scalar(r *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vals.Get(r.IntN(vals.Len())).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(r.Uint32()) | 1)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(r.Uint64()) | 1)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(r.Uint32() | 1)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(r.Uint64() | 1)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(r.Float32() + 0.5)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(r.NormFloat64() + 1e-3)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(strings.Repeat("é-x", 1+r.IntN(5)))
	case protoreflect.BytesKind:
		b := make([]byte, 1+r.IntN(40))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return protoreflect.ValueOfBytes(b)
	}
	panic("unhandled kind " + fd.Kind().String())
}

// Every message of berth's API, filled at random, survives the codec both
// ways against protobuf-go: encoded by the codec and decoded by
// protobuf-go, and encoded by protobuf-go and decoded by the codec.
func TestEveryMessageAgainstProtobuf(t *testing.T) {
	var c codec.Codec
	r := rand.New(rand.NewPCG(1, 2))
	n := 0
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		name := string(mt.Descriptor().FullName())
		if !strings.HasPrefix(name, "berth.") {
			return true
		}
		n++
		// The codec's fast path is taken: the generated code is there.
		if _, ok := mt.New().Interface().(interface {
			SizeVT() int
			UnmarshalVT([]byte) error
		}); !ok {
			t.Errorf("%s has no generated marshalling: run make generate", name)
			return true
		}
		for range 20 {
			in := mt.New()
			fill(r, in, 3)
			msg := in.Interface()

			data, err := c.Marshal(msg)
			if err != nil {
				t.Fatalf("%s: codec Marshal: %v", name, err)
			}
			back := mt.New().Interface()
			if err := proto.Unmarshal(data.Materialize(), back); err != nil {
				t.Fatalf("%s: protobuf-go cannot read the codec's bytes: %v", name, err)
			}
			if !proto.Equal(msg, back) {
				t.Fatalf("%s: codec → protobuf-go changed the message:\n%v\n%v", name, msg, back)
			}

			wire, err := proto.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			got := mt.New().Interface()
			if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, got); err != nil {
				t.Fatalf("%s: the codec cannot read protobuf-go's bytes: %v", name, err)
			}
			if !proto.Equal(msg, got) {
				t.Fatalf("%s: protobuf-go → codec changed the message:\n%v\n%v", name, msg, got)
			}
		}
		return true
	})
	if n < 20 {
		t.Fatalf("only %d berth messages registered: the gen packages are not all linked", n)
	}
	t.Logf("%d messages, 20 random values each", n)
}
