import socket

servidor = '192.168.1.110'
puerto_servidor = 5000

cliente_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

cliente_socket.connect((servidor, puerto_servidor))

while True:
    mensaje = input("Escribe lo que quieres enviar: ")
    cliente_socket.sendall(mensaje.encode())

    respuesta_servidor = cliente_socket.recv(1024)
    print(f"Respuesta del servidor: {respuesta_servidor.decode()}")
    cliente_socket.close()
