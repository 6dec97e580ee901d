package executor

import (
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	executorv1 "github.com/berthproject/berth/gen/berth/executor/v1"
	"github.com/berthproject/berth/internal/rpcserver"
)

// Refusals of the split listeners (RunSplit), with UNIMPLEMENTED: the
// service is not served on the port called. Neither names the other
// port's address: devices are not told where control planes call.
const (
	refuseInternalOnDevicePort = "ExecutorInternalService is not served on this port: this executor serves control planes on its internal listener (--internal-listen), at the internal address of its registry record"
	refuseDeviceOnInternalPort = "ExecutorService is not served on this port, the executor's internal listener for control planes: devices connect to the executor's address from Assign"
)

// newServers builds the gRPC servers of Run: one serving both services,
// or with split, one for devices and one (irpc) for control planes. Every
// server has the same credentials and limits (Config.RPC).
func (s *Server) newServers(split bool) (rpc, irpc *rpcserver.Server) {
	var opts []grpc.ServerOption
	if s.creds != nil {
		opts = append(opts, grpc.Creds(s.creds))
	}
	auth := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(s.internalUnaryAuth()),
		grpc.ChainStreamInterceptor(s.internalStreamAuth()),
	}
	if !split {
		rpc = rpcserver.New(s.cfg.RPC, s.log, append(opts, auth...)...)
		executorv1.RegisterExecutorServiceServer(rpc.GRPC, service{s: s})
		executorv1.RegisterExecutorInternalServiceServer(rpc.GRPC, internalService{s: s})
		return rpc, nil
	}
	rpc = rpcserver.New(s.cfg.RPC, s.log.With("listener", "device"),
		append(opts, grpc.UnknownServiceHandler(refuseService(InternalServiceName, refuseInternalOnDevicePort)))...)
	executorv1.RegisterExecutorServiceServer(rpc.GRPC, service{s: s})
	irpc = rpcserver.New(s.cfg.RPC, s.log.With("listener", "internal"),
		append(append(opts, auth...), grpc.UnknownServiceHandler(refuseService(ServiceName, refuseDeviceOnInternalPort)))...)
	executorv1.RegisterExecutorInternalServiceServer(irpc.GRPC, internalService{s: s})
	return rpc, irpc
}

// refuseService answers every call of a service the server does not
// serve: with msg for the named service (the one served on the other
// listener), with gRPC's own wording for any other.
func refuseService(name, msg string) grpc.StreamHandler {
	return func(_ any, stream grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(stream)
		svc, _, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
		if svc == name {
			return status.Error(codes.Unimplemented, msg)
		}
		return status.Errorf(codes.Unimplemented, "unknown service %s", svc)
	}
}
