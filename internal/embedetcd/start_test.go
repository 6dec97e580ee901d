package embedetcd_test
import ("context";"testing";"github.com/berthproject/berth/internal/embedetcd")
func TestStart(t *testing.T){
 s,err:=embedetcd.Start(context.Background(), embedetcd.Config{Dir:t.TempDir()}); if err!=nil{t.Fatal(err)}
 defer s.Close()
 c,err:=s.Client(); if err!=nil{t.Fatal(err)}; defer c.Close()
 if _,err:=c.Put(context.Background(),"a","b");err!=nil{t.Fatal(err)}
 t.Log(s.Endpoint())
}
