/* A VNC viewer on libvncclient, set up as Guacamole's guacd sets up its VNC client
 * (32-bit true colour, guacd's encodings list, password callback), for
 * TestDesktopWithLibVNCClient.
 *
 *   vncviewer HOST PORT PASSWORD
 *
 * Prints "connected: NAME WxH", each update, and the colour of pixel (400,300). */
#include <rfb/rfbclient.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int updates;
static const char *password;

static void got_update(rfbClient *c, int x, int y, int w, int h) {
  updates++;
  printf("update %d,%d %dx%d\n", x, y, w, h);
}

static char *get_password(rfbClient *c) { return strdup(password); }

static int pump(rfbClient *c, int rounds) {
  for (int i = 0; i < rounds; i++) {
    int n = WaitForMessage(c, 300000);
    if (n < 0 || (n > 0 && !HandleRFBServerMessage(c))) return 0;
  }
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: vncviewer HOST PORT PASSWORD\n");
    return 64;
  }
  password = argv[3];
  rfbClient *c = rfbGetClient(8, 3, 4);
  c->GotFrameBufferUpdate = got_update;
  c->GetPassword = get_password;
  c->serverHost = strdup(argv[1]);
  c->serverPort = atoi(argv[2]);
  c->appData.encodingsString = "zrle ultra copyrect hextile zlib corre rre raw";
  if (!rfbInitClient(c, NULL, NULL)) { /* frees c */
    printf("init failed\n");
    return 2;
  }
  printf("connected: %s %dx%d\n", c->desktopName, c->width, c->height);
  if (!pump(c, 4)) {
    printf("connection lost\n");
    return 3;
  }
  /* What a browser user sends through guacd: pointer, keys, clipboard. */
  SendPointerEvent(c, 10, 10, 1);
  SendPointerEvent(c, 10, 10, 0);
  SendKeyEvent(c, 0x61, TRUE);
  SendKeyEvent(c, 0x61, FALSE);
  SendClientCutText(c, "clip", 4);
  SendFramebufferUpdateRequest(c, 0, 0, 50, 50, FALSE);
  if (!pump(c, 3)) {
    printf("connection lost\n");
    return 3;
  }
  unsigned char *p = c->frameBuffer + (300 * c->width + 400) * 4;
  printf("updates=%d pixel(400,300)=%d,%d,%d\n", updates, p[0], p[1], p[2]);
  rfbClientCleanup(c);
  return updates >= 2 ? 0 : 5;
}
