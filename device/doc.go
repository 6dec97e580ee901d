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
//		ControlPlane: "cp.example.com:7000",
//		DeviceID:     "printer-0042",
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
// A Device is safe for concurrent use. It owns every goroutine it starts;
// [Device.Close] (or cancelling the context given to Connect) stops and joins
// them all and closes the gRPC connections the Device created.
package device
