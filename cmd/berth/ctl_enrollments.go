package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthproject/berth/device"
	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	"github.com/berthproject/berth/registry"
)

// newCtlEnrollmentCmds returns `enrollments` and `enrollment
// create|disable|enable|delete|device-key`, and adds `revoke`, `unrevoke`
// and `revoked` under the `device` command among siblings.
func newCtlEnrollmentCmds(c *ctlFlags, siblings []*cobra.Command) []*cobra.Command {
	var limit int
	list := &cobra.Command{
		Use:   "enrollments",
		Short: "List device enrollments (never their keys)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				es, err := listAll(ctx, c, limit, func(ctx context.Context, size int32, token string) ([]*adminv1.Enrollment, string, error) {
					r, err := cl.ListEnrollments(ctx, &adminv1.ListEnrollmentsRequest{PageSize: size, PageToken: token})
					return r.GetEnrollments(), r.GetNextPageToken(), err
				})
				if err != nil {
					return c.rpcError("enrollments", err)
				}
				return printRows(c, es, []string{"ENROLLMENT", "KIND", "DISABLED", "CREATED"}, func(e *adminv1.Enrollment) []string {
					return []string{e.GetEnrollmentId(), kindName(e.GetKind()), fmt.Sprint(e.GetDisabled()), e.GetCreatedAt().AsTime().UTC().Format(time.RFC3339)}
				})
			})
		},
	}
	list.Flags().IntVar(&limit, "limit", 0, "list at most this many (0: all)")

	enr := &cobra.Command{Use: "enrollment", Short: "Create, disable, enable or delete a device enrollment"}
	var kind, caFile, keyOut string
	create := &cobra.Command{
		Use:   "create ENROLLMENT",
		Short: "Create an enrollment: --kind x509 --ca-file CA.pem, or --kind symmetric (prints its key once)",
		Long: "Create an enrollment.\n" +
			"  x509:      devices present a TLS client certificate chaining to the CA of --ca-file; the device id\n" +
			"             is the certificate's SAN URI berth://device/<id>, else its subject CN.\n" +
			"  symmetric: the server generates a 32-byte key and returns it this once (base64). Each device's key\n" +
			"             is HMAC-SHA256(key, device id) (`berth ctl enrollment device-key`); devices sign Assign with it.\n" +
			"             Keep the key secret: --key-out writes it to a new file readable by you only.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &adminv1.CreateEnrollmentRequest{EnrollmentId: args[0]}
			switch kind {
			case "x509":
				if caFile == "" {
					return errors.New("enrollment create: --kind x509 needs --ca-file")
				}
				b, err := os.ReadFile(caFile)
				if err != nil {
					return fmt.Errorf("enrollment create: %w", err)
				}
				req.Kind, req.CaPem = adminv1.EnrollmentKind_ENROLLMENT_KIND_X509, string(b)
			case "symmetric":
				if caFile != "" {
					return errors.New("enrollment create: --ca-file is for --kind x509")
				}
				req.Kind = adminv1.EnrollmentKind_ENROLLMENT_KIND_SYMMETRIC_KEY
			default:
				return fmt.Errorf("enrollment create: --kind %q: want x509 or symmetric", kind)
			}
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				r, err := cl.CreateEnrollment(ctx, req)
				if err != nil {
					return c.rpcError("enrollment create", err)
				}
				fmt.Fprintf(c.stdout, "enrollment %s created (%s)\n", args[0], kind)
				key := r.GetSymmetricKey()
				if len(key) == 0 {
					return nil
				}
				enc := base64.StdEncoding.EncodeToString(key) + "\n"
				if keyOut != "" {
					if err := writeNewSecret(keyOut, enc); err != nil {
						return fmt.Errorf("enrollment create: the enrollment exists but its key could not be saved (delete and create it again): %w", err)
					}
					fmt.Fprintf(c.stdout, "its key is in %s; it is not shown again\n", keyOut)
					return nil
				}
				fmt.Fprintf(c.stdout, "key (shown once, keep it secret): %s", enc)
				return nil
			})
		},
	}
	create.Flags().StringVar(&kind, "kind", "", "x509 or symmetric")
	create.Flags().StringVar(&caFile, "ca-file", "", "PEM CA certificates of an x509 enrollment")
	create.Flags().StringVar(&keyOut, "key-out", "", "write a symmetric enrollment's key to this new file (mode 0600) instead of printing it")
	simple := func(verb, short string, call func(context.Context, adminv1.AdminServiceClient, string) error) *cobra.Command {
		return &cobra.Command{
			Use:   verb + " ENROLLMENT",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
					if err := call(ctx, cl, args[0]); err != nil {
						return c.rpcError("enrollment "+verb, err)
					}
					fmt.Fprintf(c.stdout, "enrollment %s: %s\n", args[0], verb+"d")
					return nil
				})
			},
		}
	}
	disable := simple("disable", "Disable an enrollment: its devices are refused and their streams closed", func(ctx context.Context, cl adminv1.AdminServiceClient, id string) error {
		_, err := cl.DisableEnrollment(ctx, &adminv1.DisableEnrollmentRequest{EnrollmentId: id})
		return err
	})
	enable := simple("enable", "Enable a disabled enrollment", func(ctx context.Context, cl adminv1.AdminServiceClient, id string) error {
		_, err := cl.EnableEnrollment(ctx, &adminv1.EnableEnrollmentRequest{EnrollmentId: id})
		return err
	})
	del := simple("delete", "Delete an enrollment for good (a symmetric key is gone with it)", func(ctx context.Context, cl adminv1.AdminServiceClient, id string) error {
		_, err := cl.DeleteEnrollment(ctx, &adminv1.DeleteEnrollmentRequest{EnrollmentId: id})
		return err
	})
	deviceKey := &cobra.Command{
		Use:   "device-key KEY_FILE DEVICE",
		Short: "Print a device's key derived from a symmetric enrollment's key file (offline, for provisioning)",
		Args:  cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			if !registry.ValidID(args[1]) {
				return fmt.Errorf("enrollment device-key: device id %q: want 1-128 of [A-Za-z0-9._:@-]", args[1])
			}
			key, err := readEnrollmentKey(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, base64.StdEncoding.EncodeToString(device.DeriveDeviceKey(key, args[1])))
			return nil
		},
	}
	enr.AddCommand(create, disable, enable, del, deviceKey)

	for _, s := range siblings {
		if s.Name() == "device" {
			s.AddCommand(newCtlRevokeCmds(c)...)
		}
	}
	return []*cobra.Command{list, enr}
}

// newCtlRevokeCmds returns `revoke`, `unrevoke` and `revoked`, for under
// `device`.
func newCtlRevokeCmds(c *ctlFlags) []*cobra.Command {
	var reason string
	revoke := &cobra.Command{
		Use:   "revoke DEVICE",
		Short: "Revoke a device: Assign refuses it and executors close its stream within about a second",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				if _, err := cl.RevokeDevice(ctx, &adminv1.RevokeDeviceRequest{DeviceId: args[0], Reason: reason}); err != nil {
					return c.rpcError("device revoke", err)
				}
				fmt.Fprintf(c.stdout, "device %s revoked\n", args[0])
				return nil
			})
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "why, for the record (at most 256 bytes)")
	unrevoke := &cobra.Command{
		Use:   "unrevoke DEVICE",
		Short: "Lift a device's revocation",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				if _, err := cl.UnrevokeDevice(ctx, &adminv1.UnrevokeDeviceRequest{DeviceId: args[0]}); err != nil {
					return c.rpcError("device unrevoke", err)
				}
				fmt.Fprintf(c.stdout, "device %s: revocation lifted\n", args[0])
				return nil
			})
		},
	}
	var limit int
	revoked := &cobra.Command{
		Use:   "revoked",
		Short: "List revoked devices",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAdmin(cmd.Context(), func(ctx context.Context, cl adminv1.AdminServiceClient) error {
				rs, err := listAll(ctx, c, limit, func(ctx context.Context, size int32, token string) ([]*adminv1.RevokedDevice, string, error) {
					r, err := cl.ListRevokedDevices(ctx, &adminv1.ListRevokedDevicesRequest{PageSize: size, PageToken: token})
					return r.GetRevoked(), r.GetNextPageToken(), err
				})
				if err != nil {
					return c.rpcError("device revoked", err)
				}
				return printRows(c, rs, []string{"DEVICE", "REVOKED", "REASON"}, func(r *adminv1.RevokedDevice) []string {
					return []string{r.GetDeviceId(), r.GetRevokedAt().AsTime().UTC().Format(time.RFC3339), r.GetReason()}
				})
			})
		},
	}
	revoked.Flags().IntVar(&limit, "limit", 0, "list at most this many (0: all)")
	return []*cobra.Command{revoke, unrevoke, revoked}
}

func kindName(k adminv1.EnrollmentKind) string {
	switch k {
	case adminv1.EnrollmentKind_ENROLLMENT_KIND_X509:
		return "x509"
	case adminv1.EnrollmentKind_ENROLLMENT_KIND_SYMMETRIC_KEY:
		return "symmetric"
	}
	return "unknown"
}

// readEnrollmentKey reads a symmetric enrollment's key: base64 (standard
// or URL alphabet), as `ctl enrollment create` prints it.
func readEnrollmentKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("enrollment key: %w", err)
	}
	s := strings.TrimSpace(string(b))
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		key, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	}
	if err != nil || len(key) != registry.SymmetricKeySize {
		return nil, fmt.Errorf("enrollment key %s: want %d bytes in base64", path, registry.SymmetricKeySize)
	}
	return key, nil
}

// writeNewSecret writes data to a file that must not exist yet, readable by
// its owner only.
func writeNewSecret(path, data string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
