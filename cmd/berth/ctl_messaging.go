package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
)

// maxDataFile bounds what --data-file reads (the server refuses more than
// 256 KiB anyway).
const maxDataFile = 1 << 20

// messagingFlags are the flags of the commands that talk to a control
// plane's MessagingService.
type messagingFlags struct {
	*ctlFlags
}

// newCtlMessagingCmds adds send, call, device and subscribe to ctl.
func newCtlMessagingCmds(c *ctlFlags) []*cobra.Command {
	return []*cobra.Command{newCtlSendCmd(c), newCtlCallCmd(c), newCtlDeviceCmd(c), newCtlSubscribeCmd(c)}
}

func newCtlSendCmd(c *ctlFlags) *cobra.Command {
	m := &messagingFlags{ctlFlags: c}
	var data payloadFlags
	var queue, allowUnassigned bool
	var ttl time.Duration
	var key string
	cmd := &cobra.Command{
		Use:   "send DEVICE",
		Short: "Send a message to a device (at once, or queued with --queue)",
		Long: "Send a message to a device through a control plane. Without --queue the device must be\n" +
			"connected and acknowledge it in time; with --queue the message is stored first and delivered\n" +
			"now or when the device connects, until --ttl ends. A device never assigned and not connected\n" +
			"is refused (NOT_FOUND) unless --allow-unassigned is given.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			payload, err := data.read(cmd)
			if err != nil {
				return err
			}
			req := &messagingv1.SendRequest{DeviceId: args[0], Payload: payload, ContentType: data.contentType, IdempotencyKey: key,
				Mode: messagingv1.DeliveryMode_DELIVERY_MODE_ONLINE_ONLY}
			if queue {
				req.Mode = messagingv1.DeliveryMode_DELIVERY_MODE_QUEUE
			}
			if allowUnassigned {
				if !queue {
					return errors.New("--allow-unassigned needs --queue")
				}
				req.AllowUnassigned = true
			}
			if cmd.Flags().Changed("ttl") {
				if ttl <= 0 {
					return fmt.Errorf("--ttl %v: want > 0", ttl)
				}
				req.Ttl = durationpb.New(ttl)
			}
			return m.call(cmd.Context(), true, func(ctx context.Context, cl messagingv1.MessagingServiceClient) error {
				resp, err := cl.Send(ctx, req)
				if err != nil {
					return m.rpcError("send", err)
				}
				if m.output == "json" {
					return m.printProto(resp)
				}
				switch resp.GetStatus() {
				case messagingv1.SendStatus_SEND_STATUS_DELIVERED:
					fmt.Fprintf(m.stdout, "message %s delivered to %s\n", resp.GetMessageId(), args[0])
				default:
					fmt.Fprintf(m.stdout, "message %s queued for %s\n", resp.GetMessageId(), args[0])
				}
				if d := resp.GetDetail(); d != "" {
					fmt.Fprintln(m.stdout, "  "+d)
				}
				return nil
			})
		},
	}
	data.add(cmd)
	f := cmd.Flags()
	f.BoolVar(&queue, "queue", false, "queue the message when the device is not connected (else fail at once)")
	f.DurationVar(&ttl, "ttl", 0, "how long a queued message may wait (default on the server: 1h; at most 168h)")
	f.BoolVar(&allowUnassigned, "allow-unassigned", false, "with --queue: queue even for a device that was never assigned and is not connected")
	f.StringVar(&key, "idempotency-key", "", "makes retries safe: a second send with the same key returns the first message id")
	return cmd
}

func newCtlCallCmd(c *ctlFlags) *cobra.Command {
	m := &messagingFlags{ctlFlags: c}
	var data payloadFlags
	cmd := &cobra.Command{
		Use:   "call DEVICE",
		Short: "Send a request to a connected device and print its reply",
		Long:  "Send a request to a connected device and print its reply. --timeout bounds the wait.",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			payload, err := data.read(cmd)
			if err != nil {
				return err
			}
			req := &messagingv1.CallRequest{DeviceId: args[0], Payload: payload, ContentType: data.contentType}
			return m.call(cmd.Context(), true, func(ctx context.Context, cl messagingv1.MessagingServiceClient) error {
				resp, err := cl.Call(ctx, req)
				if err != nil {
					return m.rpcError("call", err)
				}
				if m.output == "json" {
					return m.printProto(resp)
				}
				fmt.Fprintln(m.stdout, printablePayload(resp.GetPayload(), resp.GetContentType()))
				return nil
			})
		},
	}
	data.add(cmd)
	return cmd
}

func newCtlDeviceCmd(c *ctlFlags) *cobra.Command {
	m := &messagingFlags{ctlFlags: c}
	cmd := &cobra.Command{
		Use:   "device DEVICE",
		Short: "Show whether a device is connected, where, and how many messages wait for it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return m.call(cmd.Context(), true, func(ctx context.Context, cl messagingv1.MessagingServiceClient) error {
				d, err := cl.GetDevice(ctx, &messagingv1.GetDeviceRequest{DeviceId: args[0]})
				if err != nil {
					return m.rpcError("device", err)
				}
				if m.output == "json" {
					return m.printProto(d)
				}
				tw := tabwriter.NewWriter(m.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "DEVICE\t%s\n", d.GetDeviceId())
				if d.GetOnline() {
					since := ""
					if d.GetConnectedSince() != nil {
						since = " since " + d.GetConnectedSince().AsTime().UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "ONLINE\tyes, at executor %s of group %s%s\n", d.GetExecutorId(), d.GetGroupId(), since)
				} else {
					fmt.Fprintf(tw, "ONLINE\tno\n")
				}
				fmt.Fprintf(tw, "QUEUED\t%d\n", d.GetQueuedMessages())
				if d.GetAssignedGroupId() != "" {
					fmt.Fprintf(tw, "ASSIGNED\tgroup %s, label %s\n", d.GetAssignedGroupId(), d.GetAssignedLabel())
				} else {
					fmt.Fprintf(tw, "ASSIGNED\t-\n")
				}
				return tw.Flush()
			})
		},
	}
	return cmd
}

func newCtlSubscribeCmd(c *ctlFlags) *cobra.Command {
	m := &messagingFlags{ctlFlags: c}
	var devices, tenants, topics []string
	var count int
	cmd := &cobra.Command{
		Use:   "subscribe",
		Short: "Print what devices publish, as it comes (until interrupted)",
		Long: "Print what devices publish, as it comes, until interrupted or --count publishes were printed.\n" +
			"Filters of one kind match any of their values; filters of different kinds must all match.\n" +
			"--timeout does not apply.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &messagingv1.SubscribeRequest{DeviceIds: devices, TenantIds: tenants, Topics: topics}
			return m.call(cmd.Context(), false, func(ctx context.Context, cl messagingv1.MessagingServiceClient) error {
				ctx, cancel := context.WithCancel(ctx)
				defer cancel()
				s, err := cl.Subscribe(ctx, req)
				if err != nil {
					return m.rpcError("subscribe", err)
				}
				if _, err := s.Header(); err != nil {
					return m.subscribeEnd(cmd.Context(), err)
				}
				fmt.Fprintln(m.stderr, "subscribed; waiting for publishes")
				for n := 0; count <= 0 || n < count; n++ {
					r, err := s.Recv()
					if err != nil {
						return m.subscribeEnd(cmd.Context(), err)
					}
					if r.GetDropped() > 0 {
						fmt.Fprintf(m.stderr, "(%d publishes dropped before this one: this subscriber was too slow)\n", r.GetDropped())
					}
					if m.output == "json" {
						b, err := protojson.Marshal(r)
						if err != nil {
							return err
						}
						fmt.Fprintln(m.stdout, string(b))
						continue
					}
					tenant := ""
					if r.GetTenantId() != "" {
						tenant = " tenant=" + r.GetTenantId()
					}
					fmt.Fprintf(m.stdout, "%s %s%s %s: %s\n", r.GetReceivedAt().AsTime().UTC().Format(time.RFC3339Nano), r.GetDeviceId(), tenant,
						r.GetTopic(), printablePayload(r.GetPayload(), r.GetContentType()))
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&devices, "device", nil, "only this device (repeatable)")
	f.StringArrayVar(&tenants, "tenant", nil, "only devices of this tenant (repeatable)")
	f.StringArrayVar(&topics, "topic", nil, "only this topic (repeatable)")
	f.IntVar(&count, "count", 0, "exit after this many publishes (0: never)")
	return cmd
}

// subscribeEnd turns the end of a subscription into the command's result:
// an interrupt ends it cleanly.
func (m *messagingFlags) subscribeEnd(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, io.EOF) {
		return nil
	}
	return m.rpcError("subscribe", err)
}

// call runs fn with a client of the control plane; bounded says whether
// --timeout applies (the first contact is bounded either way).
func (m *messagingFlags) call(ctx context.Context, bounded bool, fn func(context.Context, messagingv1.MessagingServiceClient) error) error {
	if bounded {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, m.timeout)
		defer cancel()
	}
	cc, err := m.connect(ctx)
	if err != nil {
		return err
	}
	defer cc.Close()
	return fn(ctx, messagingv1.NewMessagingServiceClient(cc))
}

// payloadFlags are --data, --data-file and --content-type.
type payloadFlags struct {
	data, file, contentType string
}

func (p *payloadFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&p.data, "data", "", "the payload, as text")
	f.StringVar(&p.file, "data-file", "", "read the payload from this file ('-' for stdin)")
	f.StringVar(&p.contentType, "content-type", "", "MIME type of the payload (default: text/plain with --data)")
	cmd.MarkFlagsMutuallyExclusive("data", "data-file")
}

// read returns the payload the flags name.
func (p *payloadFlags) read(cmd *cobra.Command) ([]byte, error) {
	if p.file == "" {
		if p.contentType == "" && cmd.Flags().Changed("data") {
			p.contentType = "text/plain"
		}
		return []byte(p.data), nil
	}
	var r io.Reader
	if p.file == "-" {
		r = cmd.InOrStdin()
	} else {
		f, err := os.Open(p.file)
		if err != nil {
			return nil, fmt.Errorf("--data-file: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxDataFile+1))
	if err != nil {
		return nil, fmt.Errorf("--data-file: %w", err)
	}
	if len(b) > maxDataFile {
		return nil, fmt.Errorf("--data-file %s: more than %d bytes", p.file, maxDataFile)
	}
	return b, nil
}

// printablePayload shows a payload as text when it is, else says what it is.
func printablePayload(b []byte, contentType string) string {
	if utf8.Valid(b) && !strings.ContainsFunc(string(b), func(r rune) bool { return r < 0x20 && r != '\n' && r != '\t' && r != '\r' }) {
		return strings.TrimRight(string(b), "\n")
	}
	if contentType == "" {
		contentType = "binary"
	}
	return fmt.Sprintf("(%d bytes of %s; -o json shows them in base64)", len(b), contentType)
}
