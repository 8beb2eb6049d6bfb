#!/bin/sh
# The password never lands in the image: the user name and its hash (openssl passwd -apr1, or
# htpasswd -nB) come from the environment at start.
set -eu
: "${GLB_UI_USER:?set GLB_UI_USER}"
: "${GLB_UI_PASSWORD_HASH:?set GLB_UI_PASSWORD_HASH}"
: "${GLB_UPSTREAM:=ui:8501}"
umask 077
printf '%s:%s\n' "$GLB_UI_USER" "$GLB_UI_PASSWORD_HASH" > /run/glb-proxy/htpasswd
sed "s|@UPSTREAM@|$GLB_UPSTREAM|g" /etc/glb-proxy/nginx.conf.template > /run/glb-proxy/nginx.conf
exec nginx -c /run/glb-proxy/nginx.conf -g 'daemon off;'
