// sx THREADS N CHUNK PORT: send N datagrams of 900 B to 127.0.0.1:PORT with sendmmsg in
// chunks of CHUNK from THREADS threads (sharing the socket); print wall us.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>
static int fd, N, CH, T; static struct sockaddr_in dst; static char buf[900];
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
static void* run(void*a){ long k=(long)a; struct mmsghdr h[64]; struct iovec v[64];
 for(int i=k*CH;i<N;i+=T*CH){ int n= (N-i)<CH?(N-i):CH; for(int j=0;j<n;j++){v[j].iov_base=buf;v[j].iov_len=900;memset(&h[j],0,sizeof h[j]);h[j].msg_hdr.msg_name=&dst;h[j].msg_hdr.msg_namelen=sizeof dst;h[j].msg_hdr.msg_iov=&v[j];h[j].msg_hdr.msg_iovlen=1;}
  int s=0; while(s<n){int r=sendmmsg(fd,h+s,n-s,0); if(r<0){perror("sendmmsg");break;} s+=r;} }
 return 0;}
int main(int c,char**v){T=atoi(v[1]);N=atoi(v[2]);CH=atoi(v[3]);memset(buf,'x',900);
 fd=socket(AF_INET,SOCK_DGRAM,0); int sz=8<<20; setsockopt(fd,SOL_SOCKET,SO_SNDBUF,&sz,sizeof sz);
 dst.sin_family=AF_INET;dst.sin_port=htons(atoi(v[4]));inet_pton(AF_INET,"127.0.0.1",&dst.sin_addr);
 for(int r=0;r<7;r++){ double t0=now(); pthread_t th[8]; for(long k=0;k<T;k++)pthread_create(&th[k],0,run,(void*)k); for(int k=0;k<T;k++)pthread_join(th[k],0); printf("%.0f ",now()-t0); fflush(stdout); usleep(300000);} printf("\n"); }
