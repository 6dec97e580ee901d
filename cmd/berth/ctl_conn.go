package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/berthproject/berth/access"
	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	"github.com/berthproject/berth/internal/codec"
)

// connectTimeout bounds the first contact with a control plane: with none
// there, a command fails within it.
const connectTimeout = 2 * time.Second

// errLegacyEtcd answers the --etcd or --prefix of a script written when ctl
// wrote etcd itself.
var errLegacyEtcd = errors.New("ctl talks to a control plane now, not to etcd: drop --etcd/--prefix and pass --controlplane ADDR (or set " +
	controlPlaneEnv + "); with no control plane up, `berth ctl registry --etcd …` reaches etcd directly")

// connect opens a connection to a control plane at --controlplane (a
// comma-separated list names replicas to try in order) and makes sure one
// answers there: within connectTimeout per address when nothing does; while
// the only ones that answer say NOT_SERVING (loading their view of the
// registry), until one serves or ctx ends.
func (c *ctlFlags) connect(ctx context.Context) (*grpc.ClientConn, error) {
	if c.legacyEtcd != "" || c.legacyPrefix != "" {
		return nil, errLegacyEtcd
	}
	if err := c.resolve(); err != nil {
		return nil, err
	}
	if c.output != "table" && c.output != "json" {
		return nil, fmt.Errorf("--output %q: want table or json", c.output)
	}
	var addrs []string
	for _, a := range strings.Split(c.controlplane, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("--controlplane: no address (nor %s)", controlPlaneEnv)
	}
	transport, err := c.tls.transport()
	if err != nil {
		return nil, err
	}
	var (
		waiting     *grpc.ClientConn // the first that answered NOT_SERVING
		waitingAddr string
		failures    []error
	)
	for _, addr := range addrs {
		cc, err := grpc.NewClient(addr, c.dialOptions(transport)...)
		if err != nil {
			failures = append(failures, fmt.Errorf("control plane %s: %w", addr, err))
			continue
		}
		serving, err := checkServing(ctx, cc, addr)
		switch {
		case err == nil && serving:
			if waiting != nil {
				waiting.Close()
			}
			return cc, nil
		case err == nil && waiting == nil:
			waiting, waitingAddr = cc, addr
		default:
			failures = append(failures, err)
			cc.Close()
		}
	}
	if waiting != nil {
		if err := waitServing(ctx, healthpb.NewHealthClient(waiting), waitingAddr); err != nil {
			waiting.Close()
			return nil, err
		}
		return waiting, nil
	}
	return nil, errors.Join(failures...)
}

// dialOptions are the transport and the credentials ctl presents: the API
// key of --api-key / $BERTH_API_KEY, if any.
func (c *ctlFlags) dialOptions(transport credentials.TransportCredentials) []grpc.DialOption {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(transport), codec.DialOption()}
	if key := c.key(); key != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(access.APIKeyCredentials(key)))
	}
	return opts
}

// checkServing asks the health service of the control plane at addr
// whether it serves.
func checkServing(ctx context.Context, cc *grpc.ClientConn, addr string) (bool, error) {
	hctx, cancel := context.WithTimeout(ctx, connectTimeout)
	resp, err := healthpb.NewHealthClient(cc).Check(hctx, &healthpb.HealthCheckRequest{})
	cancel()
	switch {
	case err == nil:
		return resp.GetStatus() == healthpb.HealthCheckResponse_SERVING, nil
	case status.Code(err) == codes.Unimplemented && strings.Contains(status.Convert(err).Message(), "unexpected HTTP status code"):
		return false, &codedError{code: codes.Unavailable, msg: fmt.Sprintf("no control plane at %s (something that is not a gRPC server answers: %s); pass --controlplane / %s",
			addr, status.Convert(err).Message(), controlPlaneEnv)}
	case status.Code(err) == codes.Unimplemented:
		return true, nil // a gRPC server without the health service: its calls will tell
	case ctx.Err() != nil:
		return false, fmt.Errorf("control plane %s: %w", addr, ctx.Err())
	}
	return false, unreachable(addr, err)
}

// waitServing waits until the control plane at addr serves, or ctx ends.
func waitServing(ctx context.Context, hc healthpb.HealthClient, addr string) error {
	notServing := &codedError{code: codes.Unavailable, msg: fmt.Sprintf("control plane at %s is not serving (loading its view of the registry, or stopping; is etcd up?)", addr)}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return notServing
	}
	for {
		resp, err := w.Recv()
		if err != nil {
			return notServing
		}
		if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
	}
}

// unreachable says that no control plane answers at addr, and what to do.
func unreachable(addr string, err error) error {
	why := status.Convert(err).Message()
	switch {
	case status.Code(err) == codes.DeadlineExceeded:
		why = fmt.Sprintf("no answer within %v", connectTimeout)
	case strings.Contains(why, "connection refused"):
		why = "connection refused"
	default:
		if i := strings.LastIndex(why, ": "); i >= 0 {
			why = strings.Trim(why[i+2:], `" `)
		}
	}
	return &codedError{code: codes.Unavailable, msg: fmt.Sprintf("no control plane at %s (%s); start one or pass --controlplane / %s", addr, why, controlPlaneEnv)}
}

// withAdmin runs fn, bounded by --timeout, with a client of the control
// plane's AdminService.
func (c *ctlFlags) withAdmin(ctx context.Context, fn func(context.Context, adminv1.AdminServiceClient) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cc, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer cc.Close()
	return fn(ctx, adminv1.NewAdminServiceClient(cc))
}

// rpcError makes a status readable: "send: Unavailable: device d is not
// connected".
func (c *ctlFlags) rpcError(what string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	if st.Code() == codes.Unavailable && strings.Contains(st.Message(), "connection refused") {
		return &codedError{code: codes.Unavailable, msg: fmt.Sprintf("%s: %v", what, unreachable(c.controlplane, err))}
	}
	if st.Code() == codes.Unauthenticated && c.key() == "" {
		return &codedError{code: st.Code(), msg: fmt.Sprintf("%s: %s: %s (pass --api-key or set %s)", what, st.Code(), st.Message(), apiKeyEnv)}
	}
	return &codedError{code: st.Code(), msg: fmt.Sprintf("%s: %s: %s", what, st.Code(), st.Message())}
}

// printProto writes msg as indented protojson.
func (c *ctlFlags) printProto(msg proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(msg)
	if err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, string(b))
	return nil
}

// listAll follows next_page_token from the first page until the last, or
// until limit items were read (0: no limit).
func listAll[T any](ctx context.Context, c *ctlFlags, limit int, page func(ctx context.Context, size int32, token string) ([]T, string, error)) ([]T, error) {
	var all []T
	token := ""
	for {
		size := c.pageSize
		if limit > 0 && limit-len(all) < int(size) {
			size = int32(limit - len(all))
		}
		items, next, err := page(ctx, size, token)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if next == "" || (limit > 0 && len(all) >= limit) {
			if limit > 0 && len(all) > limit {
				all = all[:limit]
			}
			return all, nil
		}
		token = next
	}
}

// key is the API key ctl presents, as resolve found it (empty: none).
func (c *ctlFlags) key() string { return c.resolvedKey }

// changed reports whether the flag name of fs was given.
func changed(fs *pflag.FlagSet, name string) bool {
	if fs == nil {
		return false
	}
	f := fs.Lookup(name)
	return f != nil && f.Changed
}

// resolve settles what no flag gave: from the BERTH_* environment, then
// from the context file berth dev writes, then the defaults. The context's
// CA and API key file are used only when the control plane in effect is
// the one it names, so that its key never goes to another server.
func (c *ctlFlags) resolve() error {
	if c.resolved {
		return nil
	}
	c.resolved = true
	dc, ok, err := readContext(contextPath())
	if err != nil {
		return usageError{err}
	}
	if !changed(c.flags, "controlplane") {
		switch {
		case os.Getenv(controlPlaneEnv) != "":
			c.controlplane = os.Getenv(controlPlaneEnv)
		case ok && dc.ControlPlane != "":
			c.controlplane = dc.ControlPlane
		default:
			c.controlplane = defaultControlPlane
		}
	}
	ours := ok && strings.TrimSpace(c.controlplane) == dc.ControlPlane
	for _, v := range []struct {
		flag, env string
		dst       *string
		fromCtx   string
	}{
		{"ca", caEnv, &c.tls.files.CA, dc.CA},
		{"cert", certEnv, &c.tls.files.Cert, ""},
		{"key", keyEnv, &c.tls.files.Key, ""},
	} {
		if changed(c.flags, v.flag) {
			continue
		}
		if e := os.Getenv(v.env); e != "" {
			*v.dst = e
		} else if ours && v.fromCtx != "" {
			*v.dst = v.fromCtx
		}
	}
	switch {
	case changed(c.flags, "api-key"):
		c.resolvedKey = strings.TrimSpace(c.apiKey)
	case changed(c.flags, "api-key-file"):
		return c.readKeyFile(c.apiKeyFile, "--api-key-file")
	case strings.TrimSpace(os.Getenv(apiKeyEnv)) != "":
		c.resolvedKey = strings.TrimSpace(os.Getenv(apiKeyEnv))
	case os.Getenv(apiKeyFileEnv) != "":
		return c.readKeyFile(os.Getenv(apiKeyFileEnv), "$"+apiKeyFileEnv)
	case ours && dc.APIKeyFile != "":
		return c.readKeyFile(dc.APIKeyFile, "api_key_file of "+contextPath())
	}
	return nil
}

// readKeyFile sets the API key from the file path, which what names.
func (c *ctlFlags) readKeyFile(path, what string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return usageError{fmt.Errorf("%s: %w", what, err)}
	}
	c.resolvedKey = strings.TrimSpace(string(b))
	return nil
}
