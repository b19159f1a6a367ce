// rx PORT: read datagrams and answer each with 300 B (like a SIPp phone's 200)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
int main(int c,char**v){int fd=socket(AF_INET,SOCK_DGRAM,0);int sz=32<<20;setsockopt(fd,SOL_SOCKET,SO_RCVBUF,&sz,sizeof sz);
struct sockaddr_in a={0};a.sin_family=AF_INET;a.sin_port=htons(atoi(v[1]));bind(fd,(void*)&a,sizeof a);
char b[2000],r[300];memset(r,'y',300);for(;;){struct sockaddr_in f;socklen_t l=sizeof f;int n=recvfrom(fd,b,2000,0,(void*)&f,&l);if(n>0)sendto(fd,r,300,0,(void*)&f,l);}}
