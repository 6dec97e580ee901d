package device_test

import (
	"fmt"
	"time"

	"github.com/berthproject/berth/device"
)

// A device connects: it asks the control plane where to go, opens its stream
// to an executor of the assigned group, and keeps it open in the background
// until it is closed. Each example runs its own berth cluster in the test
// process: a control plane and one executor, group-1-exec-1.
func ExampleConnect() {
	c, err := startCluster() // a control plane and an executor, in this process
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.stop()
	ctx, cancel := waitCtx()
	defer cancel()

	d, err := device.Connect(ctx, device.Config{
		ControlPlane: c.ControlPlane,
		DeviceID:     "printer-0042",
		Spec: device.Spec{
			Model:      "HL-L2350DW",
			Firmware:   "1.4.2",
			Attributes: map[string]string{"site": "osaka"},
		},
		TenantID: "acme",
		Services: []string{"print"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()

	if err := d.WaitForState(ctx, device.Connected); err != nil {
		fmt.Println(err)
		return
	}
	s := d.Session()
	fmt.Println(d.State())
	fmt.Println("group:", s.GroupID, "label:", s.Label)
	fmt.Println("executor:", s.ExecutorID)
	// Output:
	// connected
	// group: group-1 label: default
	// executor: group-1-exec-1
}

// A service sends the device a message (MessagingService.Send); the
// application receives it from Messages and acknowledges it, which is what
// the service's Send waits for.
func ExampleMessage_Ack() {
	c, err := startCluster() // a control plane and an executor, in this process
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.stop()
	ctx, cancel := waitCtx()
	defer cancel()

	d, err := device.Connect(ctx, device.Config{ControlPlane: c.ControlPlane, DeviceID: "printer-0042"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()

	sent := c.send(ctx, "printer-0042", "print job 7")
	m, ok := <-d.Messages()
	if !ok {
		fmt.Println("device stopped:", <-sent)
		return
	}
	fmt.Printf("device got %q (%s)\n", m.Payload, m.ContentType)
	if err := m.Ack(ctx); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("service:", <-sent)
	// Output:
	// device got "print job 7" (text/plain)
	// service: delivered and acknowledged
}

// A service makes a request (MessagingService.Call); the application
// answers it with Reply, which acknowledges it too.
func ExampleMessage_Reply() {
	c, err := startCluster() // a control plane and an executor, in this process
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.stop()
	ctx, cancel := waitCtx()
	defer cancel()

	d, err := device.Connect(ctx, device.Config{ControlPlane: c.ControlPlane, DeviceID: "printer-0042"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()

	answer := c.call(ctx, "printer-0042", "toner level?")
	m, ok := <-d.Messages()
	if !ok {
		fmt.Println("device stopped:", <-answer)
		return
	}
	fmt.Printf("device got %q, expects a reply: %v\n", m.Payload, m.ExpectsReply)
	if err := m.Reply(ctx, []byte(`{"toner":80}`), "application/json"); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("service:", <-answer)
	// Output:
	// device got "toner level?", expects a reply: true
	// service: answer "{\"toner\":80}" (application/json)
}

// A request the device cannot serve is answered with ReplyError: the
// service's Call fails with ABORTED and the device's message.
func ExampleMessage_ReplyError() {
	c, err := startCluster() // a control plane and an executor, in this process
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.stop()
	ctx, cancel := waitCtx()
	defer cancel()

	d, err := device.Connect(ctx, device.Config{ControlPlane: c.ControlPlane, DeviceID: "printer-0042"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()

	answer := c.call(ctx, "printer-0042", "print page 1")
	m, ok := <-d.Messages()
	if !ok {
		fmt.Println("device stopped:", <-answer)
		return
	}
	if err := m.ReplyError(ctx, "out of paper"); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("service:", <-answer)
	// Output:
	// service: call failed: Aborted: device printer-0042: out of paper
}

// A device publishes upstream on its stream; services subscribed to the
// topic (MessagingService.Subscribe) get it. Publish sends at most once and
// does not queue, so a device reporting its status publishes periodically.
func ExampleDevice_Publish() {
	c, err := startCluster() // a control plane and an executor, in this process
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.stop()
	ctx, cancel := waitCtx()
	defer cancel()

	sub, err := c.subscribe(ctx, "status")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sub.stop()

	d, err := device.Connect(ctx, device.Config{ControlPlane: c.ControlPlane, DeviceID: "sensor-0007"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()
	if err := d.WaitForState(ctx, device.Connected); err != nil {
		fmt.Println(err)
		return
	}

	// Report the status every 100ms until the service has seen it.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var got string
	for got == "" {
		if err := d.Publish(ctx, "status", []byte(`{"temp":21.5}`), "application/json"); err != nil {
			fmt.Println(err)
			return
		}
		select {
		case got = <-sub.C:
		case <-tick.C:
		case <-ctx.Done():
			fmt.Println(ctx.Err())
			return
		}
	}
	fmt.Println("service got", got)
	// Output:
	// service got sensor-0007: {"temp":21.5}
}

// Close ends the stream cleanly (frames sent before it reach the executor),
// stops every goroutine of the Device and closes its Messages channel.
func ExampleDevice_Close() {
	c, err := startCluster() // a control plane and an executor, in this process
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.stop()
	ctx, cancel := waitCtx()
	defer cancel()

	d, err := device.Connect(ctx, device.Config{ControlPlane: c.ControlPlane, DeviceID: "printer-0042"})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := d.WaitForState(ctx, device.Connected); err != nil {
		fmt.Println(err)
		return
	}
	if err := d.Close(); err != nil {
		fmt.Println(err)
		return
	}
	_, open := <-d.Messages()
	fmt.Println(d.State())
	fmt.Println("messages open:", open)
	fmt.Println("publish:", d.Publish(ctx, "status", nil, ""))
	// Output:
	// closed
	// messages open: false
	// publish: device: not connected
}
