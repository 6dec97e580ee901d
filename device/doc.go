// Package device is the Go device SDK of berth.
//
// A device asks the control plane where to go (ControlPlaneService.Assign),
// then holds one bidirectional ExecutorService.Connect stream to one executor
// of the assigned processing group. [Connect] starts a Device that does all of
// this in the background and keeps doing it: it retries with exponential
// backoff and jitter, tries the group's endpoints in order, calls Assign again
// when its token expires or is refused, answers pings, watches for a silent
// stream, follows redirects make-before-break, and hands messages to the
// application once each through [Device.Messages].
//
//	d, err := device.Connect(ctx, device.Config{
//		ControlPlane: "cp.example.com:7070",
//		DeviceID:     "printer-0042",
//		Spec:         device.Spec{Model: "HL-L2350DW", Firmware: "1.4.2"},
//		TenantID:     "acme",
//	})
//	if err != nil {
//		return err
//	}
//	defer d.Close()
//	for m := range d.Messages() {
//		if m.ExpectsReply { // a request: answer it (that acks it too)
//			_ = m.Reply(ctx, answer(m), "application/json")
//			continue
//		}
//		handle(m)
//		_ = m.Ack(ctx)
//	}
//
// What the control plane's placement policy sees of the device is in
// [Config]: its [Spec] (model, firmware, attributes), tenant, user and
// services. The SDK's API uses its own types; the generated protobuf types
// stay inside it.
//
// The device sends on its stream through one queue: [Message.Ack],
// [Message.Reply], [Message.ReplyError] and [Device.Publish] block until
// their frame is handed to the transport, the stream ends
// ([ErrStreamClosed]) or their context ends. A frame still waiting in the
// queue when its context ends is withdrawn and never sent; one the stream
// is already writing may still go out.
//
// A Device is safe for concurrent use. It owns every goroutine it starts;
// [Device.Close] (or cancelling the context given to Connect) stops and joins
// them all and closes the gRPC connections the Device created.
//
// The examples run against a real berth cluster started in the test process
// (etcd, a control plane and an executor); services reach the device through
// the control plane's MessagingService.
//
// The package imports only the generated API (gen/) and grpc-go: neither
// etcd nor the servers.
package device
